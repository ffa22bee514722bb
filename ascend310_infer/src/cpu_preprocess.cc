#include "cpu_preprocess.h"

#include <stdexcept>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "backend_support.h"

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

}  // namespace ssd_infer
