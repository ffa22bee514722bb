// Which files of the dataset folder the runner reads, in which order.
#ifndef SSD_INFER_IMAGE_FILES_H_
#define SSD_INFER_IMAGE_FILES_H_

#include <string>
#include <vector>

namespace ssd_infer {

struct ImageListing {
  std::vector<std::string> images;   // image paths, sorted by file name
  std::vector<std::string> skipped;  // file names of regular files that are not images
};

// Regular files of `folder` with an image extension (.jpg .jpeg .png .bmp, any case), sorted by
// name; other files are listed in `skipped`. Throws when the folder is missing or two images
// share a stem (their result files would overwrite each other).
ImageListing ListImages(const std::string& folder);

// File name without folder and extension: the prefix of the image's result files.
std::string ImageStem(const std::string& path);

// ".JPG" -> ".jpg": the extension that decides whether (and how) a file is read.
std::string LowercaseExtension(const std::string& path);

}  // namespace ssd_infer

#endif  // SSD_INFER_IMAGE_FILES_H_
