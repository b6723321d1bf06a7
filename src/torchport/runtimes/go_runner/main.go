// torchport Go runner: run a bundle's golden inputs through an ONNX artifact with ONNX Runtime
// (github.com/yalue/onnxruntime_go) and write the outputs.
//
// Usage: ORT_DYLIB_PATH=/path/to/libonnxruntime.so runner BUNDLE OUT_DIR [--artifact PATH]
//
// Reads only BUNDLE/manifest.json and the files it names. A bundle it will not trust (a path that is absolute or
// has a '..' component, a missing file, a SHA-256 mismatch, golden inputs that disagree with the declared inputs)
// is refused with one "error: ..." line on stderr and exit code 2, before ONNX Runtime is even loaded. Any other
// failure is one "error: ..." line and exit code 1. On success it writes OUT_DIR/<output>.bin (raw little-endian,
// row-major) and OUT_DIR/result.json, and prints the path of result.json.
//
// This file: command line, manifest and bundle checks. ort.go: the ONNX Runtime part.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// refusal is a bundle this runner will not run: exit code 2, and no result.json.
type refusal struct{ msg string }

func (r refusal) Error() string { return r.msg }

func refuse(format string, args ...any) error { return refusal{fmt.Sprintf(format, args...)} }

const usage = "usage: runner BUNDLE OUT_DIR [--artifact PATH]"

// manifest holds only the fields a runner reads; encoding/json ignores the rest.
type manifest struct {
	Inputs    []declared `json:"inputs"`
	Artifacts []artifact `json:"artifacts"`
	Golden    struct {
		Inputs []tensorFile `json:"inputs"`
	} `json:"golden"`
}

// declared is one of the model's inputs; its shape mixes numbers and the string "batch".
type declared struct {
	Name  string `json:"name"`
	Dtype string `json:"dtype"`
	Shape []any  `json:"shape"`
}

type artifact struct {
	Path      string  `json:"path"`
	SHA256    string  `json:"sha256"`
	Kind      string  `json:"kind"`
	Precision *string `json:"precision"`
}

func (a artifact) precision() string {
	if a.Precision == nil {
		return "fp32"
	}
	return *a.Precision
}

// tensorFile is a golden tensor: raw little-endian row-major bytes at Path.
type tensorFile struct {
	Name   string  `json:"name"`
	Path   string  `json:"path"`
	SHA256 string  `json:"sha256"`
	Dtype  string  `json:"dtype"`
	Shape  []int64 `json:"shape"`
}

// goldenInput is a golden tensor that passed its checksum and the input checks.
type goldenInput struct {
	tensorFile
	data []byte
}

func main() {
	code := 0
	func() {
		// A panic would print a Go stack trace; the contract wants one line instead.
		defer func() {
			if p := recover(); p != nil {
				fmt.Fprintf(os.Stderr, "error: %v\n", p)
				code = 1
			}
		}()
		code = run(os.Args[1:])
	}()
	os.Exit(code)
}

func run(args []string) int {
	bundle, outDir, wanted, ok := parseArgs(args)
	if !ok {
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	result, err := runBundle(bundle, outDir, wanted)
	if err != nil {
		// ORT and OS messages may span lines; the contract wants exactly one.
		fmt.Fprintln(os.Stderr, "error: "+strings.Join(strings.Fields(err.Error()), " "))
		var r refusal
		if errors.As(err, &r) {
			return 2
		}
		return 1
	}
	fmt.Println(result)
	return 0
}

// parseArgs accepts BUNDLE OUT_DIR with one optional "--artifact PATH" anywhere.
func parseArgs(args []string) (bundle, outDir, wanted string, ok bool) {
	var positional []string
	for i := 0; i < len(args); i++ {
		if args[i] != "--artifact" {
			positional = append(positional, args[i])
			continue
		}
		if i+1 == len(args) || wanted != "" {
			return "", "", "", false
		}
		wanted = args[i+1]
		i++
	}
	if len(positional) != 2 {
		return "", "", "", false
	}
	return positional[0], positional[1], wanted, true
}

// runBundle does every check first (so a refused bundle never loads ONNX Runtime), then runs the model.
func runBundle(bundle, outDir, wanted string) (string, error) {
	manifestPath := filepath.Join(bundle, "manifest.json")
	if info, err := os.Stat(manifestPath); err != nil || !info.Mode().IsRegular() {
		return "", refuse("%s is not a bundle: manifest.json not found", bundle)
	}
	raw, err := os.ReadFile(manifestPath)
	if err != nil {
		return "", err
	}
	var m manifest
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.UseNumber() // keeps declared dims exact (json.Number), not float64
	if err := decoder.Decode(&m); err != nil {
		return "", fmt.Errorf("manifest.json: %w", err)
	}
	art, err := pickArtifact(m, wanted)
	if err != nil {
		return "", err
	}
	// The checksum is verified on the bytes read here; ORT then loads the same path (by path, so that an ONNX
	// file with external data next to it still loads).
	if _, err := checkedFile(bundle, art.Path, art.SHA256); err != nil {
		return "", err
	}
	var inputs []goldenInput
	for _, entry := range m.Golden.Inputs {
		data, err := checkedFile(bundle, entry.Path, entry.SHA256)
		if err != nil {
			return "", err
		}
		inputs = append(inputs, goldenInput{entry, data})
	}
	if err := checkInputs(m.Inputs, inputs); err != nil {
		return "", err
	}
	return runModel(filepath.Join(bundle, filepath.FromSlash(art.Path)), art, inputs, outDir)
}

// pickArtifact is the artifact named on the command line, or the first fp32 ONNX one.
func pickArtifact(m manifest, wanted string) (artifact, error) {
	for _, a := range m.Artifacts {
		if wanted == "" && a.Kind == "onnx" && a.precision() == "fp32" {
			return a, nil
		}
		if wanted != "" && a.Path == wanted {
			if a.Kind != "onnx" {
				return a, refuse("artifact '%s' is %s, not onnx; refusing it", a.Path, a.Kind)
			}
			return a, nil
		}
	}
	if wanted != "" {
		return artifact{}, refuse("the manifest lists no ONNX artifact '%s'", wanted)
	}
	return artifact{}, refuse("the manifest lists no ONNX artifact (kind onnx, precision fp32)")
}

// safePath keeps every manifest path inside the bundle.
func safePath(bundle, relative string) (string, error) {
	bad := relative == "" || strings.HasPrefix(relative, "/") || strings.Contains(relative, "\\")
	for _, part := range strings.Split(relative, "/") {
		bad = bad || part == ".."
	}
	if bad {
		return "", refuse("bundle path '%s' is absolute or contains '..'; refusing it", relative)
	}
	return filepath.Join(bundle, filepath.FromSlash(relative)), nil
}

// checkOutputName refuses an output name that is not a plain file name: it becomes OUT_DIR/<name>.bin.
func checkOutputName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return refuse("output name '%s' is not a plain file name; refusing it", name)
	}
	return nil
}

// checkedFile reads a bundle file and verifies its SHA-256 against the manifest.
func checkedFile(bundle, relative, expected string) ([]byte, error) {
	path, err := safePath(bundle, relative)
	if err != nil {
		return nil, err
	}
	if info, err := os.Stat(path); err != nil || !info.Mode().IsRegular() {
		return nil, refuse("bundle file '%s' is missing", relative)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	actual := hex.EncodeToString(sum[:])
	if actual != expected {
		return nil, refuse("bundle file '%s' fails its checksum: SHA-256 %s... != manifest %s...; refusing it",
			relative, prefix(actual, 12), prefix(expected, 12))
	}
	return data, nil
}

func prefix(s string, n int) string {
	if len(s) < n {
		return s
	}
	return s[:n]
}

// checkInputs compares the golden tensors that will be fed with the model's declared inputs, before any run,
// so that a bundle whose golden data does not fit its model is refused with a clear reason instead of an ORT error.
func checkInputs(decl []declared, golden []goldenInput) error {
	byName := map[string]declared{}
	for _, d := range decl {
		byName[d.Name] = d
	}
	have := map[string]bool{}
	for _, g := range golden {
		have[g.Name] = true
	}
	for _, d := range decl {
		if !have[d.Name] {
			return refuse("input '%s': the manifest declares it but golden/ has no tensor of that name; refusing it", d.Name)
		}
	}
	for _, g := range golden {
		d, ok := byName[g.Name]
		if !ok {
			return refuse("golden input '%s' is not among the manifest's inputs; refusing it", g.Name)
		}
		if d.Dtype != g.Dtype {
			return refuse("input '%s': the manifest declares dtype %s, the golden tensor is %s; refusing it", g.Name, d.Dtype, g.Dtype)
		}
		if !shapeMatches(d.Shape, g.Shape) {
			return refuse("input '%s': the manifest declares shape %s, the golden tensor is %s; refusing it",
				g.Name, formatShape(d.Shape), formatShape(g.Shape))
		}
		kind, ok := dtypes[g.Dtype]
		if !ok {
			return refuse("dtype %s is not supported by this runner", g.Dtype)
		}
		need := int64(kind.size)
		for _, n := range g.Shape {
			need *= n
		}
		if int64(len(g.data)) != need {
			return refuse("golden input '%s' holds %d bytes, its shape %s and dtype %s need %d; refusing it",
				g.Name, len(g.data), formatShape(g.Shape), g.Dtype, need)
		}
	}
	return nil
}

// shapeMatches: same rank, and every dim equal, except "batch" which matches any size >= 1.
func shapeMatches(decl []any, golden []int64) bool {
	if len(decl) != len(golden) {
		return false
	}
	for i, d := range decl {
		switch v := d.(type) {
		case string:
			if v != "batch" || golden[i] < 1 {
				return false
			}
		case json.Number:
			if n, err := v.Int64(); err != nil || n != golden[i] {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// formatShape prints [batch, 1, 8, 8]: numbers plain, "batch" unquoted, comma+space separated.
func formatShape[T any](shape []T) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
