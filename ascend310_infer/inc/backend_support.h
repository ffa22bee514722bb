// Small pieces every backend needs: the normalisation constants, model/flag checks, timing and messages.
#ifndef SSD_INFER_BACKEND_SUPPORT_H_
#define SSD_INFER_BACKEND_SUPPORT_H_

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace ssd_infer {

// RGB normalisation of the SSD checkpoints (ImageNet statistics, 0-255 scale), as src/dataset.py.
constexpr float kImageMean[3] = {123.675f, 116.28f, 103.53f};
constexpr float kImageStd[3] = {58.395f, 57.12f, 57.375f};

inline double MillisecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

inline std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string text = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + ")";
}

// A model input dimension, checked against its flag (0 = not given). A dynamic dimension in the
// model (from_model <= 0) takes the flag, else `fallback`.
inline int64_t ResolveDimension(const std::string& flag, int64_t from_flag, int64_t from_model, int64_t fallback,
                                const std::string& model_path) {
  if (from_model <= 0) return from_flag > 0 ? from_flag : fallback;
  if (from_flag > 0 && from_flag != from_model) {
    throw std::runtime_error("--" + flag + " " + std::to_string(from_flag) + " does not match " + model_path +
                             ", which was exported with " + std::to_string(from_model) +
                             "; drop the flag or export the model again with the wanted size");
  }
  return from_model;
}

}  // namespace ssd_infer

#endif  // SSD_INFER_BACKEND_SUPPORT_H_
