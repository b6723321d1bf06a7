# torchport Open Inference Protocol v2 client, in R.
#
# Usage:
#   Rscript client.R BUNDLE URL OUT_DIR [--api-key KEY]
#
#   BUNDLE   a torchport bundle folder (the one holding manifest.json)
#   URL      the base of a running `torchport serve`, e.g. http://127.0.0.1:8000
#   OUT_DIR  where <output>.bin and result.json are written (created if missing)
#   --api-key KEY  sent as "Authorization: Bearer KEY" (default: $TORCHPORT_API_KEY, if set)
#
# It reads only BUNDLE/manifest.json and the golden files it names, then sends the golden inputs to
# URL/v2/models/<name>/infer twice: once as a JSON request, once with Triton's binary tensor extension. Both
# answers must match the golden outputs within the manifest's tolerances. It then times the binary request at
# batch 1 and at the full golden batch, writes the binary answer's outputs and result.json to OUT_DIR, and prints
# the path of result.json.
#
# Exit status: 0 success; 1 a server error, an unreachable server or outputs that differ from golden; 2 a wrong
# command line or a bundle it refuses (a path leaving the bundle, a checksum mismatch, a dtype mismatch). Every
# error is one line on stderr starting with "error: " (or "usage: ").
#
# Needs R (>= 4.0) and the packages jsonlite, curl and openssl:
#   apt-get install r-base-core r-cran-jsonlite r-cran-curl r-cran-openssl

USAGE <- "usage: Rscript client.R BUNDLE URL OUT_DIR [--api-key KEY]"
TIMEOUT_S <- 30
DEFAULT_ATOL <- 1e-4
DEFAULT_RTOL <- 1e-3

# manifest dtype -> v2 datatype, and bytes per element
DATATYPES <- c(float32 = "FP32", float16 = "FP16", int64 = "INT64", int32 = "INT32", uint8 = "UINT8")
ITEMSIZE <- c(FP32 = 4, FP16 = 2, INT64 = 8, INT32 = 4, UINT8 = 1, FP64 = 8)
DTYPES <- c(FP32 = "float32", FP16 = "float16", INT64 = "int64", INT32 = "int32", UINT8 = "uint8", FP64 = "float64")


# ---- errors ---------------------------------------------------------------------------------------------------

# An error this client reports as one line; `status` is the exit code (1: failure, 2: usage or refused bundle).
client_error <- function(message, status) {
  structure(class = c("client_error", "error", "condition"),
            list(message = message, call = NULL, status = status))
}
refuse <- function(...) stop(client_error(paste0(...), 2L))
fail <- function(...) stop(client_error(paste0(...), 1L))

# A number the way a person writes it: 0.0001, 0.52, 1e-08 (at most `digits` significant digits).
num <- function(x, digits = 15) {
  if (is.na(x)) return(if (is.nan(x)) "nan" else "NA")
  sprintf("%.*g", digits, x)
}
shape_text <- function(shape) paste0("[", paste(unlist(shape), collapse = ", "), "]")


# ---- the bundle -----------------------------------------------------------------------------------------------

# BUNDLE/<relative>, refusing a path that is empty, absolute, has a backslash or a '..' component.
safe_path <- function(root, relative) {
  if (!is.character(relative) || length(relative) != 1 || !nzchar(relative) || startsWith(relative, "/") ||
      grepl("\\", relative, fixed = TRUE) || ".." %in% strsplit(relative, "/", fixed = TRUE)[[1]]) {
    refuse("bundle path '", relative, "' is absolute or contains '..'; refusing it")
  }
  file.path(root, relative)
}

# The bytes of a golden file, refused unless its SHA-256 is the manifest's.
checked_bytes <- function(root, entry) {
  path <- safe_path(root, entry$path)
  if (!file.exists(path) || dir.exists(path)) refuse("bundle file '", entry$path, "' is missing")
  bytes <- readBin(path, what = "raw", n = file.info(path)$size)
  digest <- paste(as.character(unclass(openssl::sha256(bytes))), collapse = "")  # hex, lower case
  want <- tolower(as.character(entry$sha256))
  if (!identical(digest, want)) {
    refuse("bundle file '", entry$path, "' fails its checksum: SHA-256 ", substr(digest, 1, 12), "... != manifest ",
           substr(want, 1, 12), "...; refusing it")
  }
  bytes
}

read_manifest <- function(root) {
  path <- file.path(root, "manifest.json")
  if (!file.exists(path)) refuse(root, " is not a bundle: manifest.json not found")
  tryCatch(jsonlite::fromJSON(path, simplifyVector = FALSE),
           error = function(e) refuse(path, " is not valid JSON: ", conditionMessage(e)))
}

# atol/rtol from the verification entry for model.onnx judged by parity, else the defaults.
tolerances <- function(manifest) {
  for (entry in manifest$verification) {
    if (identical(entry$artifact, "model.onnx") && identical(entry$judged_by, "parity")) {
      return(list(atol = as.numeric(entry$atol), rtol = as.numeric(entry$rtol)))
    }
  }
  list(atol = DEFAULT_ATOL, rtol = DEFAULT_RTOL)
}

# Refuse golden inputs that do not match the manifest's declared inputs (name, dtype, shape, byte count).
check_inputs <- function(manifest, golden) {
  declared <- list()
  for (spec in manifest$inputs) declared[[spec$name]] <- spec
  names_golden <- vapply(manifest$golden$inputs, function(e) e$name, "")
  for (name in setdiff(names(declared), names_golden)) {
    refuse("input '", name, "': the manifest declares it but golden/ has no tensor of that name; refusing it")
  }
  for (entry in manifest$golden$inputs) {
    spec <- declared[[entry$name]]
    if (is.null(spec)) refuse("golden input '", entry$name, "' is not among the manifest's inputs; refusing it")
    if (!identical(entry$dtype, spec$dtype)) {
      refuse("input '", entry$name, "': the manifest declares dtype ", spec$dtype, ", the golden tensor is ",
             entry$dtype, "; refusing it")
    }
    want <- spec$shape
    got <- entry$shape
    same <- length(want) == length(got) &&
      all(mapply(function(w, g) identical(w, "batch") || isTRUE(w == g), want, got))
    if (!same) {
      refuse("input '", entry$name, "': the manifest declares shape ", shape_text(want), ", the golden tensor is ",
             shape_text(got), "; refusing it")
    }
    if (!entry$dtype %in% names(DATATYPES)) refuse("dtype ", entry$dtype, " is not supported by this client")
    need <- prod(unlist(got)) * ITEMSIZE[[DATATYPES[[entry$dtype]]]]
    have <- length(golden[[entry$name]])
    if (have != need) {
      refuse("golden input '", entry$name, "' holds ", have, " bytes, its shape ", shape_text(got), " and dtype ",
             entry$dtype, " need ", need, "; refusing it")
    }
  }
}


# ---- raw little-endian tensors --------------------------------------------------------------------------------

# Unsigned little-endian integers of `size` bytes (1, 2 or 4) as doubles.
unsigned_le <- function(bytes, size) {
  b <- matrix(as.numeric(as.integer(bytes)), nrow = size)
  colSums(b * 256^(seq_len(size) - 1))
}

# The numbers in `bytes`, read as v2 `datatype` (raw little-endian), as a double vector.
decode <- function(bytes, datatype) {
  switch(datatype,
    FP32 = readBin(bytes, what = "numeric", size = 4, n = length(bytes) %/% 4, endian = "little"),
    FP64 = readBin(bytes, what = "numeric", size = 8, n = length(bytes) %/% 8, endian = "little"),
    FP16 = {
      bits <- unsigned_le(bytes, 2)
      sign <- ifelse(bits >= 32768, -1, 1)
      exponent <- (bits %/% 1024) %% 32
      mantissa <- bits %% 1024
      sign * ifelse(exponent == 0, mantissa * 2^-24,
                    ifelse(exponent == 31, ifelse(mantissa == 0, Inf, NaN),
                           (1 + mantissa / 1024) * 2^(exponent - 15)))
    },
    UINT8 = as.numeric(as.integer(bytes)),
    INT32 = {
      u <- unsigned_le(bytes, 4)
      ifelse(u >= 2^31, u - 2^32, u)
    },
    INT64 = {
      words <- unsigned_le(bytes, 4)
      low <- words[c(TRUE, FALSE)]
      high <- words[c(FALSE, TRUE)]
      high <- ifelse(high >= 2^31, high - 2^32, high)
      high * 2^32 + low
    },
    fail("datatype ", datatype, " is not supported by this client")
  )
}


# ---- HTTP -----------------------------------------------------------------------------------------------------

# One reusable curl handle, so that repeated requests share a kept-alive connection.
new_session <- function(url, model, api_key) {
  list(handle = curl::new_handle(), url = url, model = model, api_key = api_key,
       endpoint = paste0(url, "/v2/models/", curl::curl_escape(model), "/infer"),
       route = paste0("POST /v2/models/", model, "/infer"))
}

# POST `body` (a raw vector) to the infer endpoint; the response (status 200) as list(headers, body), both raw.
post <- function(session, body, headers) {
  handle <- session$handle
  if (!is.null(session$api_key)) headers[["Authorization"]] <- paste("Bearer", session$api_key)
  curl::handle_setheaders(handle, .list = headers)
  curl::handle_setopt(handle, post = TRUE, postfields = body, timeout = TIMEOUT_S, connecttimeout = TIMEOUT_S)
  response <- tryCatch(curl::curl_fetch_memory(session$endpoint, handle = handle),
                       error = function(e) fail("cannot reach ", session$url, ": ", conditionMessage(e)))
  if (response$status_code != 200) {
    content <- response$content[seq_len(min(length(response$content), 100000))]
    text <- rawToChar(content[content != as.raw(0)])
    message <- tryCatch({
      parsed <- jsonlite::fromJSON(text, simplifyVector = FALSE)
      if (is.list(parsed) && is.character(parsed$error)) parsed$error else substr(text, 1, 200)
    }, error = function(e) substr(text, 1, 200))
    retry <- header_value(response$headers, "Retry-After")
    if (response$status_code == 503 && !is.null(retry)) message <- paste0(message, " (Retry-After: ", retry, ")")
    fail("HTTP ", response$status_code, " from ", session$route, ": ", message)
  }
  list(headers = response$headers, body = response$content)
}

# The value of response header `name` (the last one, if repeated), or NULL; `headers` is curl's raw header block.
header_value <- function(headers, name) {
  lines <- strsplit(rawToChar(headers), "\r\n", fixed = TRUE)[[1]]
  prefix <- paste0(tolower(name), ":")
  hits <- lines[startsWith(tolower(lines), prefix)]
  if (length(hits) == 0) NULL else trimws(substring(hits[length(hits)], nchar(prefix) + 1))
}

# Request A: the inputs as JSON numbers. Returns list(model_version, outputs = name -> list(shape, values)).
infer_json <- function(session, inputs) {
  items <- lapply(inputs, function(input) {
    values <- decode(input$bytes, input$datatype)  # whole numbers for integer types: jsonlite writes them plainly
    list(name = input$name, shape = I(input$shape), datatype = input$datatype, data = I(values))
  })
  body <- jsonlite::toJSON(list(inputs = unname(items)), auto_unbox = TRUE, digits = NA)
  response <- post(session, charToRaw(enc2utf8(as.character(body))), list("Content-Type" = "application/json"))
  document <- parse_json(rawToChar(response$body), "json")
  outputs <- list()
  for (item in document$outputs) {
    values <- vapply(item$data, function(v) if (is.null(v)) NA_real_ else as.numeric(v), 0)
    outputs[[item$name]] <- list(shape = unlist(item$shape), values = values, datatype = item$datatype)
  }
  list(model_version = document$model_version, outputs = outputs)
}

# Request B: a JSON header followed by the raw input bytes; outputs asked for as raw bytes too. Built once and
# sent as often as needed (the latency loop times only the round trip and the decoding of the answer).
binary_request <- function(inputs, output_names) {
  header <- list(
    inputs = unname(lapply(inputs, function(input) {
      list(name = input$name, shape = I(input$shape), datatype = input$datatype,
           parameters = list(binary_data_size = length(input$bytes)))
    })),
    outputs = lapply(output_names, function(name) list(name = name, parameters = list(binary_data = TRUE)))
  )
  header_bytes <- charToRaw(enc2utf8(as.character(jsonlite::toJSON(header, auto_unbox = TRUE))))
  list(body = c(header_bytes, unlist(lapply(unname(inputs), function(input) input$bytes))),
       headers = list("Content-Type" = "application/octet-stream",
                      "Inference-Header-Content-Length" = as.character(length(header_bytes))))
}

# Send a binary request; returns list(model_version, outputs = name -> list(shape, values, datatype, bytes)).
infer_binary <- function(session, request) {
  decode_binary_response(post(session, request$body, request$headers))
}

decode_binary_response <- function(response) {
  body <- response$body
  length_header <- header_value(response$headers, "Inference-Header-Content-Length")
  header_length <- if (is.null(length_header)) length(body) else suppressWarnings(as.numeric(length_header))
  if (is.na(header_length) || header_length < 0 || header_length > length(body)) {
    fail("binary: the response's Inference-Header-Content-Length '", length_header, "' does not fit its ",
         length(body), " bytes")
  }
  document <- parse_json(rawToChar(body[seq_len(header_length)]), "binary")
  offset <- header_length
  outputs <- list()
  for (item in document$outputs) {
    size <- item$parameters$binary_data_size
    if (is.null(size)) fail("binary: output '", item$name, "' came back without parameters.binary_data_size")
    if (offset + size > length(body)) {
      fail("binary: output '", item$name, "' runs past the end of the response (", length(body), " bytes)")
    }
    bytes <- body[offset + seq_len(size)]
    offset <- offset + size
    outputs[[item$name]] <- list(shape = unlist(item$shape), values = decode(bytes, item$datatype),
                                 datatype = item$datatype, bytes = bytes)
  }
  list(model_version = document$model_version, outputs = outputs)
}

parse_json <- function(text, kind) {
  tryCatch(jsonlite::fromJSON(text, simplifyVector = FALSE),
           error = function(e) fail(kind, ": the response is not valid JSON: ", substr(text, 1, 200)))
}


# ---- checks and timing ----------------------------------------------------------------------------------------

# Every golden output must be in `answer`, with the golden shape and |got - want| <= atol + rtol * |want|.
compare <- function(kind, answer, goldens, tol) {
  for (golden in goldens) {
    got <- answer$outputs[[golden$name]]
    if (is.null(got)) fail(kind, ": the server returned no output '", golden$name, "'")
    if (!identical(as.numeric(got$shape), as.numeric(golden$shape)) || length(got$values) != length(golden$values)) {
      fail(kind, ": output '", golden$name, "' has shape ", shape_text(got$shape), ", golden has ",
           shape_text(golden$shape))
    }
    want <- golden$values
    difference <- abs(got$values - want)
    ok <- (difference <= tol$atol + tol$rtol * abs(want)) |
      (is.nan(got$values) & is.nan(want)) | (!is.na(got$values) & got$values == want)
    ok[is.na(ok)] <- FALSE
    if (!all(ok)) {
      worst <- if (any(is.na(difference[!ok]))) NaN else max(difference)
      fail(kind, ": output '", golden$name, "' differs from golden by up to ", num(worst, 4), " (atol ",
           num(tol$atol), ", rtol ", num(tol$rtol), ")")
    }
  }
}

# The first `batch` samples of each input, as the binary request sends them.
first_samples <- function(inputs, batch) {
  lapply(inputs, function(input) {
    per_sample <- length(input$bytes) / input$shape[1]
    input$bytes <- input$bytes[seq_len(per_sample * batch)]
    input$shape[1] <- batch
    input
  })
}

median_ms <- function(session, request, iterations) {
  infer_binary(session, request)  # warm-up
  times <- numeric(iterations)
  for (i in seq_len(iterations)) {
    start <- Sys.time()
    infer_binary(session, request)
    times[i] <- as.numeric(difftime(Sys.time(), start, units = "secs")) * 1000
  }
  stats::median(times)  # the mean of the two middle values for an even count
}


# ---- main -----------------------------------------------------------------------------------------------------

parse_args <- function(args) {
  api_key <- NULL
  flag <- which(args == "--api-key")
  if (length(flag) > 1) stop(client_error(USAGE, 2L))
  if (length(flag) == 1) {
    if (flag == length(args)) stop(client_error(USAGE, 2L))
    api_key <- args[flag + 1]
    args <- args[-c(flag, flag + 1)]
  } else if (nzchar(Sys.getenv("TORCHPORT_API_KEY"))) {
    api_key <- Sys.getenv("TORCHPORT_API_KEY")
  }
  if (length(args) != 3) stop(client_error(USAGE, 2L))
  list(bundle = args[1], url = sub("/$", "", args[2]), out = sub("(.)/+$", "\\1", args[3]), api_key = api_key)
}

main <- function(args) {
  cli <- parse_args(args)
  for (package in c("jsonlite", "curl", "openssl")) {
    if (!requireNamespace(package, quietly = TRUE)) {
      fail("the R package '", package, "' is not installed (apt-get install r-cran-", package, ")")
    }
  }
  manifest <- read_manifest(cli$bundle)
  model <- manifest$name
  if (!is.character(model) || length(model) != 1 || !nzchar(model)) refuse("the manifest has no model 'name'")
  tol <- tolerances(manifest)

  # golden files: checksummed, then checked against the manifest's declared inputs
  golden_bytes <- list()
  for (entry in manifest$golden$inputs) golden_bytes[[entry$name]] <- checked_bytes(cli$bundle, entry)
  check_inputs(manifest, golden_bytes)
  inputs <- lapply(manifest$golden$inputs, function(entry) {
    list(name = entry$name, datatype = DATATYPES[[entry$dtype]], shape = as.numeric(unlist(entry$shape)),
         bytes = golden_bytes[[entry$name]])
  })
  names(inputs) <- vapply(inputs, function(input) input$name, "")
  goldens <- lapply(manifest$golden$outputs, function(entry) {
    bytes <- checked_bytes(cli$bundle, entry)
    datatype <- DATATYPES[entry$dtype]
    if (is.na(datatype)) refuse("dtype ", entry$dtype, " is not supported by this client")
    list(name = entry$name, shape = as.numeric(unlist(entry$shape)), values = decode(bytes, datatype))
  })
  output_names <- vapply(manifest$outputs, function(spec) spec$name, "")
  for (name in output_names) {
    if (!nzchar(name) || grepl("[/\\\\]", name) || name %in% c(".", "..")) {
      refuse("output name '", name, "' cannot be a file name; refusing it")
    }
  }

  session <- new_session(cli$url, model, cli$api_key)
  compare("json", infer_json(session, inputs), goldens, tol)
  full_batch <- binary_request(inputs, output_names)
  answer <- infer_binary(session, full_batch)
  compare("binary", answer, goldens, tol)

  total <- inputs[[1]]$shape[1]
  one_sample <- binary_request(first_samples(inputs, 1), output_names)
  latency <- list(list(batch = 1, median_ms = median_ms(session, one_sample, 20), iterations = 20))
  if (total != 1) {
    latency[[2]] <- list(batch = total, median_ms = median_ms(session, full_batch, 5), iterations = 5)
  }

  dir.create(cli$out, recursive = TRUE, showWarnings = FALSE)
  if (!dir.exists(cli$out)) fail("cannot create ", cli$out)
  written <- list()
  for (name in output_names) {
    output <- answer$outputs[[name]]
    if (is.null(output)) fail("binary: the server returned no output '", name, "'")
    writeBin(output$bytes, file.path(cli$out, paste0(name, ".bin")))
    written[[length(written) + 1]] <- list(name = name, path = paste0(name, ".bin"),
                                           dtype = unname(DTYPES[output$datatype]), shape = I(output$shape))
  }
  result <- list(
    runtime = "v2-r",
    version = paste0("R ", R.version$major, ".", R.version$minor),
    device = "server",
    artifact = "model.onnx",
    precision = "fp32",
    server = cli$url,
    model_version = if (is.null(answer$model_version)) "" else as.character(answer$model_version),
    outputs = written,
    latency = latency
  )
  path <- file.path(cli$out, "result.json")
  writeLines(jsonlite::toJSON(result, auto_unbox = TRUE, pretty = TRUE, digits = NA), path)
  cat(path, "\n", sep = "")
}

# Top level: every error becomes one line on stderr and an exit status; warnings are not printed.
status <- tryCatch({
  withCallingHandlers(main(commandArgs(trailingOnly = TRUE)),
                      warning = function(w) invokeRestart("muffleWarning"))
  0L
}, client_error = function(e) {
  cat(if (startsWith(conditionMessage(e), "usage: ")) "" else "error: ",
      gsub("[\r\n]+", " ", conditionMessage(e)), "\n", sep = "", file = stderr())
  e$status
}, interrupt = function(e) {
  130L
}, error = function(e) {
  cat("error: ", gsub("[\r\n]+", " ", conditionMessage(e)), "\n", sep = "", file = stderr())
  1L
})
quit(save = "no", status = status)
