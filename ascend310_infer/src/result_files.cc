#include "result_files.h"

#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace ssd_infer {

void WriteFloatFile(const std::string& path, const float* data, std::size_t count) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(float)));
  if (!file) throw std::runtime_error("cannot write " + path + " (disk full or no write permission?)");
}

void WriteDetections(const std::string& output_dir, const std::string& stem, const ImageDetections& detections) {
  const fs::path folder(output_dir);
  WriteFloatFile((folder / (stem + "_0.bin")).string(), detections.boxes.data(), detections.boxes.size());
  WriteFloatFile((folder / (stem + "_1.bin")).string(), detections.scores.data(), detections.scores.size());
}

void WriteTimingSummary(const std::string& timing_dir, const std::string& text) {
  fs::create_directories(timing_dir);
  const std::string path = (fs::path(timing_dir) / "test_perform_static.txt").string();
  std::ofstream file(path, std::ios::trunc);
  file << text;
  if (!file) throw std::runtime_error("cannot write " + path);
}

}  // namespace ssd_infer
