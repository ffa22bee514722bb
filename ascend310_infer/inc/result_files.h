// The runner's files: per-image model outputs (the seed's result_Files layout) and the timing summary.
#ifndef SSD_INFER_RESULT_FILES_H_
#define SSD_INFER_RESULT_FILES_H_

#include <cstddef>
#include <string>

#include "inference_backend.h"

namespace ssd_infer {

// Writes `count` floats as raw little-endian bytes to `path` (replacing it).
void WriteFloatFile(const std::string& path, const float* data, std::size_t count);

// <output_dir>/<stem>_0.bin (boxes) and <stem>_1.bin (scores), read by postprocess.py.
void WriteDetections(const std::string& output_dir, const std::string& stem, const ImageDetections& detections);

// Writes `text` to <timing_dir>/test_perform_static.txt (the seed's file name).
void WriteTimingSummary(const std::string& timing_dir, const std::string& text);

}  // namespace ssd_infer

#endif  // SSD_INFER_RESULT_FILES_H_
