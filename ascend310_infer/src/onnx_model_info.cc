#include "onnx_model_info.h"

#include <fstream>
#include <iterator>
#include <set>
#include <stdexcept>
#include <string_view>

namespace ssd_infer {
namespace {

// Field numbers of onnx.proto used here.
constexpr uint32_t kModelGraph = 7;
constexpr uint32_t kGraphInitializer = 5;
constexpr uint32_t kGraphInput = 11;
constexpr uint32_t kGraphOutput = 12;
constexpr uint32_t kTensorName = 8;
constexpr uint32_t kValueInfoName = 1;
constexpr uint32_t kValueInfoType = 2;
constexpr uint32_t kTypeTensor = 1;
constexpr uint32_t kTensorTypeShape = 2;
constexpr uint32_t kShapeDim = 1;
constexpr uint32_t kDimValue = 1;

// One field of a protobuf message (wire format); `bytes` is set for length-delimited fields.
struct Field {
  uint32_t number = 0;
  uint32_t wire_type = 0;
  uint64_t varint = 0;
  std::string_view bytes;
};

// Walks the fields of one serialized protobuf message; throws on malformed input.
class ProtoReader {
 public:
  explicit ProtoReader(std::string_view message) : rest_(message) {}

  bool Next(Field* field) {
    if (rest_.empty()) return false;
    const uint64_t key = ReadVarint();
    field->number = static_cast<uint32_t>(key >> 3);
    field->wire_type = static_cast<uint32_t>(key & 7);
    field->bytes = {};
    switch (field->wire_type) {
      case 0:
        field->varint = ReadVarint();
        break;
      case 1:
        Skip(8);
        break;
      case 2: {
        const uint64_t length = ReadVarint();
        if (length > rest_.size()) throw std::runtime_error("truncated field");
        field->bytes = rest_.substr(0, length);
        Skip(length);
        break;
      }
      case 5:
        Skip(4);
        break;
      default:
        throw std::runtime_error("unsupported protobuf wire type " + std::to_string(field->wire_type));
    }
    return true;
  }

 private:
  uint64_t ReadVarint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (rest_.empty()) throw std::runtime_error("truncated varint");
      const auto byte = static_cast<uint8_t>(rest_.front());
      rest_.remove_prefix(1);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    throw std::runtime_error("varint longer than 64 bits");
  }

  void Skip(uint64_t count) {
    if (count > rest_.size()) throw std::runtime_error("truncated field");
    rest_.remove_prefix(count);
  }

  std::string_view rest_;
};

// The first length-delimited field `number` of `message` (empty when absent).
std::string_view SubMessage(std::string_view message, uint32_t number) {
  ProtoReader reader(message);
  Field field;
  while (reader.Next(&field)) {
    if (field.number == number && field.wire_type == 2) return field.bytes;
  }
  return {};
}

std::string ValueInfoName(std::string_view value_info) { return std::string(SubMessage(value_info, kValueInfoName)); }

// ValueInfoProto -> dims of its tensor type; -1 for dims without a dim_value.
std::vector<int64_t> ValueInfoShape(std::string_view value_info) {
  const std::string_view shape =
      SubMessage(SubMessage(SubMessage(value_info, kValueInfoType), kTypeTensor), kTensorTypeShape);
  std::vector<int64_t> dims;
  ProtoReader reader(shape);
  Field field;
  while (reader.Next(&field)) {
    if (field.number != kShapeDim || field.wire_type != 2) continue;
    int64_t value = -1;
    ProtoReader dim_reader(field.bytes);
    Field dim_field;
    while (dim_reader.Next(&dim_field)) {
      if (dim_field.number == kDimValue && dim_field.wire_type == 0) value = static_cast<int64_t>(dim_field.varint);
    }
    dims.push_back(value);
  }
  return dims;
}

}  // namespace

OnnxModelInfo ReadOnnxModelInfo(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot open model file " + path);
  const std::string content((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  OnnxModelInfo info;
  try {
    const std::string_view graph = SubMessage(content, kModelGraph);
    std::set<std::string> initializers;
    std::vector<std::string_view> inputs;
    ProtoReader reader(graph);
    Field field;
    while (reader.Next(&field)) {
      if (field.wire_type != 2) continue;
      if (field.number == kGraphInitializer) initializers.insert(std::string(SubMessage(field.bytes, kTensorName)));
      if (field.number == kGraphInput) inputs.push_back(field.bytes);
      if (field.number == kGraphOutput) info.output_names.push_back(ValueInfoName(field.bytes));
    }
    for (std::string_view input : inputs) {  // IR < 4 files also list initializers as inputs
      if (initializers.count(ValueInfoName(input)) == 0) {
        info.input_name = ValueInfoName(input);
        info.input_shape = ValueInfoShape(input);
        break;
      }
    }
  } catch (const std::runtime_error& error) {
    throw std::runtime_error(path + " is not a readable ONNX file (" + error.what() + ")");
  }
  if (info.input_name.empty() || info.output_names.empty()) {
    throw std::runtime_error(path + " is not an ONNX model with a graph input and outputs; export one with "
                             "export.py --file_format ONNX");
  }
  return info;
}

}  // namespace ssd_infer
