#include "cpu_preprocess.h"

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "backend_support.h"
#include "image_files.h"
#include "result_files.h"

namespace fs = std::filesystem;

namespace ssd_infer {

void PreprocessImage(const std::string& path, int64_t height, int64_t width, float* chw) {
  // MindSpore's Decode ignores EXIF orientation, so the runner must too.
  const cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION);
  if (bgr.empty()) {
    throw std::runtime_error("cannot decode image " + path + " (not a valid JPEG/PNG/BMP file?)");
  }
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  cv::Mat resized;
  cv::resize(rgb, resized, cv::Size(static_cast<int>(width), static_cast<int>(height)), 0.0, 0.0, cv::INTER_LINEAR);
  const int64_t plane = height * width;
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* row = resized.ptr<uint8_t>(static_cast<int>(y));
    for (int64_t x = 0; x < width; ++x) {
      for (int channel = 0; channel < 3; ++channel) {
        const float pixel = static_cast<float>(row[x * 3 + channel]);
        chw[channel * plane + y * width + x] = (pixel - kImageMean[channel]) / kImageStd[channel];
      }
    }
  }
}

void PreprocessBatch(const std::vector<std::string>& image_paths, int64_t batch_size, int64_t height, int64_t width,
                     const std::string& dump_dir, float* batch_chw) {
  const auto count = static_cast<int64_t>(image_paths.size());
  if (count < 1 || count > batch_size) {
    throw std::logic_error("batch of " + std::to_string(count) + " images for a model of batch " +
                           std::to_string(batch_size));
  }
  const int64_t image_floats = 3 * height * width;
  for (int64_t i = 0; i < count; ++i) {
    const std::string& path = image_paths[static_cast<std::size_t>(i)];
    float* image = batch_chw + i * image_floats;
    PreprocessImage(path, height, width, image);
    if (!dump_dir.empty()) {
      const fs::path dump = fs::path(dump_dir) / (ImageStem(path) + "_input.bin");
      WriteFloatFile(dump.string(), image, static_cast<std::size_t>(image_floats));
    }
  }
  std::fill(batch_chw + count * image_floats, batch_chw + batch_size * image_floats, 0.0f);
}

}  // namespace ssd_infer
