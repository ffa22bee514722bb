// Image preprocessing of the cpu build's engines, identical to the Python eval pipeline (src/dataset.py).
// OpenVINO and OpenCV DNN both take their input from here, so their inputs are bit-identical.
#ifndef SSD_INFER_CPU_PREPROCESS_H_
#define SSD_INFER_CPU_PREPROCESS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace ssd_infer {

// How PreprocessImage prepares an image, for the backends' Description().
constexpr char kCpuPreprocessingText[] = "OpenCV preprocessing (RGB, bilinear resize, mean/std)";

// Decodes `path` to RGB, resizes it to height x width (bilinear), normalises each channel
// with kImageMean/kImageStd (backend_support.h) and writes it planar (3 x height x width float32) to `chw`.
// Throws std::runtime_error naming the file when it cannot be decoded.
void PreprocessImage(const std::string& path, int64_t height, int64_t width, float* chw);

// Preprocesses 1..batch_size images into `batch_chw` (batch_size x 3 x height x width float32) and zeroes
// the images after them: a padding image is the mean colour, whatever the buffer held before. When
// `dump_dir` is not empty, each image's input is also written to <dump_dir>/<stem>_input.bin.
void PreprocessBatch(const std::vector<std::string>& image_paths, int64_t batch_size, int64_t height, int64_t width,
                     const std::string& dump_dir, float* batch_chw);

}  // namespace ssd_infer

#endif  // SSD_INFER_CPU_PREPROCESS_H_
