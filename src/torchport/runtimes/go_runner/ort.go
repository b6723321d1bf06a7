// The ONNX Runtime part of the torchport Go runner: load the shared library named by ORT_DYLIB_PATH, run the
// golden inputs, time batch 1 and the full batch, and write the outputs and result.json.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	ort "github.com/yalue/onnxruntime_go"
)

// dtypes this runner feeds: bundle tensors are raw little-endian, decoded explicitly so that the host's byte
// order does not matter. float16 is left out on purpose (refused with the "not supported" line).
var dtypes = map[string]struct {
	size   int
	tensor func(shape ort.Shape, raw []byte) (ort.Value, error)
}{
	"float32": {4, newTensor[float32]},
	"int64":   {8, newTensor[int64]},
	"int32":   {4, newTensor[int32]},
	"uint8":   {1, newTensor[uint8]},
}

func newTensor[T ort.TensorData](shape ort.Shape, raw []byte) (ort.Value, error) {
	data := make([]T, shape.FlattenedSize())
	if err := binary.Read(bytes.NewReader(raw), binary.LittleEndian, data); err != nil {
		return nil, err
	}
	return ort.NewTensor(shape, data)
}

type outputInfo struct {
	Name  string  `json:"name"`
	Path  string  `json:"path"`
	Dtype string  `json:"dtype"`
	Shape []int64 `json:"shape"`
}

type latency struct {
	Batch      int64   `json:"batch"`
	MedianMs   float64 `json:"median_ms"`
	Iterations int     `json:"iterations"`
}

type result struct {
	Runtime   string       `json:"runtime"`
	Version   string       `json:"version"`
	Device    string       `json:"device"`
	Artifact  string       `json:"artifact"`
	Precision string       `json:"precision"`
	Outputs   []outputInfo `json:"outputs"`
	Latency   []latency    `json:"latency"`
}

// runModel runs the checked golden inputs through modelPath and writes OUT_DIR; it returns result.json's path.
func runModel(modelPath string, art artifact, inputs []goldenInput, outDir string) (string, error) {
	library := os.Getenv("ORT_DYLIB_PATH")
	if library == "" {
		return "", refuse("set ORT_DYLIB_PATH to the ONNX Runtime shared library (libonnxruntime.so); it is not set")
	}
	if info, err := os.Stat(library); err != nil || info.IsDir() {
		return "", refuse("set ORT_DYLIB_PATH to the ONNX Runtime shared library (libonnxruntime.so); '%s' does not exist", library)
	}
	ort.SetSharedLibraryPath(library)
	if err := ort.InitializeEnvironment(ort.WithLogLevelWarning()); err != nil {
		return "", err
	}
	defer ort.DestroyEnvironment()

	options, err := ort.NewSessionOptions()
	if err != nil {
		return "", err
	}
	defer options.Destroy()
	// One thread each, so that latency compares across runners and machines; CPU is the default provider.
	if err := options.SetIntraOpNumThreads(1); err != nil {
		return "", err
	}
	if err := options.SetInterOpNumThreads(1); err != nil {
		return "", err
	}
	if err := options.SetLogSeverityLevel(ort.LoggingLevelWarning); err != nil {
		return "", err
	}

	// Output names come from the model itself, in the session's order.
	_, outInfo, err := ort.GetInputOutputInfoWithOptions(modelPath, options)
	if err != nil {
		return "", err
	}
	var inputNames, outputNames []string
	for _, in := range inputs {
		inputNames = append(inputNames, in.Name)
	}
	for _, o := range outInfo {
		if err := checkOutputName(o.Name); err != nil {
			return "", err
		}
		outputNames = append(outputNames, o.Name)
	}
	session, err := ort.NewDynamicAdvancedSession(modelPath, inputNames, outputNames, options)
	if err != nil {
		return "", err
	}
	defer session.Destroy()

	// The outputs written are those of the golden inputs at their full batch size.
	if len(inputs) == 0 {
		return "", fmt.Errorf("the manifest's golden data has no inputs to run")
	}
	total := int64(1)
	if len(inputs[0].Shape) > 0 {
		total = inputs[0].Shape[0]
	}
	feed, err := makeFeed(inputs, total)
	defer destroyAll(feed)
	if err != nil {
		return "", err
	}
	outputs := make([]ort.Value, len(outputNames)) // nil entries: ORT allocates them
	defer destroyAll(outputs)
	if err := session.Run(feed, outputs); err != nil {
		return "", err
	}

	plan := []latency{{Batch: 1, Iterations: 20}}
	if total != 1 {
		plan = append(plan, latency{Batch: total, Iterations: 5})
	}
	for i := range plan {
		if plan[i].MedianMs, err = timeBatch(session, inputs, plan[i].Batch, plan[i].Iterations, len(outputNames)); err != nil {
			return "", err
		}
	}

	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", err
	}
	described := make([]outputInfo, 0, len(outputs))
	for i, value := range outputs {
		file := outputNames[i] + ".bin"
		dtype, err := writeTensor(filepath.Join(outDir, file), value)
		if err != nil {
			return "", fmt.Errorf("output '%s': %w", outputNames[i], err)
		}
		described = append(described, outputInfo{outputNames[i], file, dtype, value.GetShape()})
	}
	res := result{"onnxruntime-go", ort.GetVersion(), "cpu", art.Path, art.precision(), described, plan}
	text, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return "", err
	}
	// result.json is written last: a run that fails part-way leaves none behind.
	path := filepath.Join(outDir, "result.json")
	if err := os.WriteFile(path, append(text, '\n'), 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// makeFeed builds one tensor per golden input from its first `batch` rows (rows are contiguous in row-major
// order). On error the tensors already built are returned too, for the caller to destroy.
func makeFeed(inputs []goldenInput, batch int64) ([]ort.Value, error) {
	feed := make([]ort.Value, 0, len(inputs))
	for _, in := range inputs {
		shape, raw := ort.Shape(append([]int64(nil), in.Shape...)), in.data
		if len(shape) > 0 && shape[0] > 0 {
			raw = raw[:int64(len(raw))/shape[0]*batch]
			shape[0] = batch
		}
		value, err := dtypes[in.Dtype].tensor(shape, raw)
		if err != nil {
			return feed, err
		}
		feed = append(feed, value)
	}
	return feed, nil
}

// timeBatch: one warm-up run, then the median of `iterations` timed runs in milliseconds. The input tensors are
// built once, outside the timed region; each timed run includes ORT allocating the outputs, as other runners do.
func timeBatch(session *ort.DynamicAdvancedSession, inputs []goldenInput, batch int64, iterations, outputCount int) (float64, error) {
	feed, err := makeFeed(inputs, batch)
	defer destroyAll(feed)
	if err != nil {
		return 0, err
	}
	once := func() (time.Duration, error) {
		outputs := make([]ort.Value, outputCount)
		start := time.Now() // time.Since on a time.Now value reads the monotonic clock
		err := session.Run(feed, outputs)
		elapsed := time.Since(start)
		destroyAll(outputs)
		return elapsed, err
	}
	if _, err := once(); err != nil {
		return 0, err
	}
	times := make([]float64, iterations)
	for i := range times {
		elapsed, err := once()
		if err != nil {
			return 0, err
		}
		times[i] = float64(elapsed.Nanoseconds()) / 1e6
	}
	sort.Float64s(times)
	n := len(times)
	if n%2 == 1 {
		return times[n/2], nil
	}
	return (times[n/2-1] + times[n/2]) / 2, nil
}

// writeTensor writes an output as raw little-endian row-major bytes and returns its dtype name.
func writeTensor(path string, value ort.Value) (string, error) {
	switch t := value.(type) {
	case *ort.Tensor[float32]:
		return "float32", writeData(path, t.GetData())
	case *ort.Tensor[int64]:
		return "int64", writeData(path, t.GetData())
	case *ort.Tensor[int32]:
		return "int32", writeData(path, t.GetData())
	case *ort.Tensor[uint8]:
		return "uint8", writeData(path, t.GetData())
	}
	return "", fmt.Errorf("this runner cannot write an output of type %s", ort.TensorElementDataType(value.DataType()))
}

func writeData[T ort.TensorData](path string, data []T) error {
	file, err := os.Create(path)
	if err != nil {
		return err
	}
	buffered := bufio.NewWriter(file)
	err = binary.Write(buffered, binary.LittleEndian, data)
	if err == nil {
		err = buffered.Flush()
	}
	if closeErr := file.Close(); err == nil {
		err = closeErr
	}
	return err
}

func destroyAll(values []ort.Value) {
	for _, v := range values {
		if v != nil {
			v.Destroy()
		}
	}
}
