#include "image_files.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>

namespace fs = std::filesystem;

namespace ssd_infer {
namespace {

bool HasImageExtension(const fs::path& path) {
  static const std::set<std::string> extensions = {".jpg", ".jpeg", ".png", ".bmp"};
  return extensions.count(LowercaseExtension(path.string())) > 0;
}

}  // namespace

std::string ImageStem(const std::string& path) { return fs::path(path).stem().string(); }

std::string LowercaseExtension(const std::string& path) {
  std::string extension = fs::path(path).extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return extension;
}

ImageListing ListImages(const std::string& folder) {
  std::error_code error;
  if (!fs::is_directory(folder, error)) {
    throw std::runtime_error("dataset folder " + folder + " does not exist or is not a folder (--dataset_path)");
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(folder)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename().string() < b.filename().string(); });
  ImageListing listing;
  std::map<std::string, std::string> file_by_stem;
  for (const fs::path& file : files) {
    if (!HasImageExtension(file)) {
      listing.skipped.push_back(file.filename().string());
      continue;
    }
    const auto [previous, inserted] = file_by_stem.emplace(file.stem().string(), file.filename().string());
    if (!inserted) {
      throw std::runtime_error("images " + previous->second + " and " + file.filename().string() + " in " + folder +
                               " share the stem '" + previous->first +
                               "', so their result files would overwrite each other; rename one");
    }
    listing.images.push_back(file.string());
  }
  return listing;
}

}  // namespace ssd_infer
