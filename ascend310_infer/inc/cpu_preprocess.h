// Image preprocessing of the cpu backend, identical to the Python eval pipeline (src/dataset.py).
#ifndef SSD_INFER_CPU_PREPROCESS_H_
#define SSD_INFER_CPU_PREPROCESS_H_

#include <cstdint>
#include <string>

namespace ssd_infer {

// Decodes `path` to RGB, resizes it to height x width (bilinear), normalises each channel
// with kImageMean/kImageStd (backend_support.h) and writes it planar (3 x height x width float32) to `chw`.
// Throws std::runtime_error naming the file when it cannot be decoded.
void PreprocessImage(const std::string& path, int64_t height, int64_t width, float* chw);

}  // namespace ssd_infer

#endif  // SSD_INFER_CPU_PREPROCESS_H_
