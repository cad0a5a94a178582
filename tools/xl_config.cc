// The xl.cfg reader behind `pvio create FILE`: a small tokenizer for xl's value syntax, then
// one typed field per key, each checked as it is read.
#include "xl_config.h"

#include <cctype>
#include <filesystem>
#include <map>
#include <set>

namespace pvio::cli {
namespace {

struct Value {
  enum class Kind { Number, String, List } kind = Kind::String;
  std::string text;                // Number, String
  std::vector<std::string> items;  // List (strings only)
};

class Reader {
 public:
  explicit Reader(std::string_view t) : t_(t) {}
  int line() const { return line_; }
  bool eof() {
    skip_blank(true);
    return pos_ >= t_.size();
  }

  // Skips spaces, tabs and comments; newlines too when `newlines`.
  void skip_blank(bool newlines) {
    while (pos_ < t_.size()) {
      const char c = t_[pos_];
      if (c == '#') {
        while (pos_ < t_.size() && t_[pos_] != '\n') ++pos_;
      } else if (c == '\n' && newlines) {
        ++line_;
        ++pos_;
      } else if (c == ' ' || c == '\t' || c == '\r') {
        ++pos_;
      } else {
        break;
      }
    }
  }

  bool key(std::string* out) {
    const std::size_t start = pos_;
    while (pos_ < t_.size() && (std::isalnum(static_cast<unsigned char>(t_[pos_])) ||
                                t_[pos_] == '_'))
      ++pos_;
    *out = std::string(t_.substr(start, pos_ - start));
    return !out->empty() && !std::isdigit(static_cast<unsigned char>((*out)[0]));
  }

  bool expect(char c) {
    skip_blank(false);
    if (pos_ < t_.size() && t_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  bool string(std::string* out, std::string* why) {
    const char q = t_[pos_++];
    out->clear();
    while (pos_ < t_.size() && t_[pos_] != q) {
      if (t_[pos_] == '\n') {
        *why = "unterminated string";
        return false;
      }
      if (t_[pos_] == '\\' && pos_ + 1 < t_.size()) ++pos_;
      out->push_back(t_[pos_++]);
    }
    if (pos_ >= t_.size()) {
      *why = "unterminated string";
      return false;
    }
    ++pos_;
    return true;
  }

  bool value(Value* v, std::string* why) {
    skip_blank(false);
    if (pos_ >= t_.size()) {
      *why = "missing value";
      return false;
    }
    const char c = t_[pos_];
    if (c == '"' || c == '\'') {
      v->kind = Value::Kind::String;
      return string(&v->text, why);
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      v->kind = Value::Kind::Number;
      const std::size_t start = pos_;
      while (pos_ < t_.size() && std::isalnum(static_cast<unsigned char>(t_[pos_]))) ++pos_;
      v->text = std::string(t_.substr(start, pos_ - start));
      return true;
    }
    if (c == '[') {
      ++pos_;
      v->kind = Value::Kind::List;
      for (;;) {
        skip_blank(true);
        if (pos_ < t_.size() && t_[pos_] == ']') {
          ++pos_;
          return true;
        }
        if (pos_ >= t_.size() || (t_[pos_] != '"' && t_[pos_] != '\'')) {
          *why = "a list holds quoted strings";
          return false;
        }
        std::string item;
        if (!string(&item, why)) return false;
        v->items.push_back(item);
        skip_blank(true);
        if (pos_ < t_.size() && t_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < t_.size() && t_[pos_] == ']') continue;
        *why = "expected ',' or ']' in the list";
        return false;
      }
    }
    *why = "a value is a number, a quoted string or a [list]";
    return false;
  }

  // After a value: only blanks, a comment or ';' until the end of the line.
  bool end_of_statement() {
    skip_blank(false);
    if (pos_ < t_.size() && t_[pos_] == ';') ++pos_;
    skip_blank(false);
    return pos_ >= t_.size() || t_[pos_] == '\n';
  }

 private:
  std::string_view t_;
  std::size_t pos_ = 0;
  int line_ = 1;
};

bool to_uint(const std::string& s, std::uint64_t max, std::uint64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (v > max) return false;
  *out = v;
  return true;
}

bool parse_on_event(const std::string& s, OnEvent* out) {
  if (s == "destroy") *out = OnEvent::Destroy;
  else if (s == "restart") *out = OnEvent::Restart;
  else if (s == "preserve") *out = OnEvent::Preserve;
  else return false;
  return true;
}

// "a=b, c=d" into pairs; a bare word (xl's positional target) becomes ("", word).
bool split_spec(const std::string& spec, std::vector<std::pair<std::string, std::string>>* out) {
  std::size_t i = 0;
  while (i <= spec.size()) {
    std::size_t j = spec.find(',', i);
    if (j == std::string::npos) j = spec.size();
    std::string part = spec.substr(i, j - i);
    const auto b = part.find_first_not_of(" \t");
    const auto e = part.find_last_not_of(" \t");
    part = b == std::string::npos ? "" : part.substr(b, e - b + 1);
    if (!part.empty()) {
      const auto eq = part.find('=');
      if (eq == std::string::npos) out->emplace_back("", part);
      else out->emplace_back(part.substr(0, eq), part.substr(eq + 1));
    }
    i = j + 1;
  }
  return true;
}

std::string resolve(const std::string& base, const std::string& p) {
  if (p.empty() || p[0] == '/' || base.empty()) return p;
  return (std::filesystem::path(base) / p).lexically_normal().string();
}

bool valid_mac(const std::string& m) {
  if (m.size() != 17) return false;
  for (std::size_t i = 0; i < 17; ++i) {
    if (i % 3 == 2 ? m[i] != ':' : !std::isxdigit(static_cast<unsigned char>(m[i]))) return false;
  }
  // A unicast address: the guest's own, never a group.
  const int first = std::stoi(m.substr(0, 2), nullptr, 16);
  return (first & 1) == 0;
}

bool disk_entry(const std::string& spec, const std::string& base, DiskConfig* d, std::string* why) {
  std::vector<std::pair<std::string, std::string>> kv;
  split_spec(spec, &kv);
  for (const auto& [k, v] : kv) {
    if (k == "target" || k.empty()) d->target = resolve(base, v);
    else if (k == "vdev") d->vdev = v;
    else if (k == "access") {
      if (v == "rw" || v == "w") d->access = "rw";
      else if (v == "ro" || v == "r") d->access = "ro";
      else return *why = "access is rw or ro, not '" + v + "'", false;
    } else if (k == "format") {
      if (v != "raw") return *why = "only format=raw is served, not '" + v + "'", false;
      d->format = v;
    } else if (k == "devtype" || k == "backendtype" || k == "script") {
      // Accepted as xl does; pvio serves every disk with pvio-blkback.
    } else {
      return *why = "unknown disk key '" + k + "'", false;
    }
  }
  if (d->target.empty()) return *why = "a disk needs target=IMAGE", false;
  return true;
}

bool vif_entry(const std::string& spec, VifConfig* v, std::string* why) {
  std::vector<std::pair<std::string, std::string>> kv;
  split_spec(spec, &kv);
  for (const auto& [k, val] : kv) {
    if (k == "mac") {
      if (!valid_mac(val)) return *why = "mac '" + val + "' is not a unicast xx:xx:xx:xx:xx:xx", false;
      v->mac = val;
    } else if (k == "bridge") {
      v->bridge = val;
    } else if (k == "type" || k == "model" || k == "script" || k == "vifname") {
      // Accepted as xl does; every pvio vif is a PV vif served by pvio-netback.
    } else {
      return *why = "unknown vif key '" + (k.empty() ? val : k) + "'", false;
    }
  }
  return true;
}

}  // namespace

std::string ConfigError::to_string(const std::string& file) const {
  std::string s = file;
  if (line > 0) s += ":" + std::to_string(line);
  s += ": ";
  if (!key.empty()) s += key + ": ";
  return s + message;
}

const char* on_event_name(OnEvent e) {
  switch (e) {
    case OnEvent::Destroy: return "destroy";
    case OnEvent::Restart: return "restart";
    case OnEvent::Preserve: return "preserve";
  }
  return "destroy";
}

bool parse_xl_config(std::string_view text, const std::string& base_dir, DomainConfigFile* out,
                     ConfigError* err) {
  Reader r(text);
  DomainConfigFile c;
  std::set<std::string> seen;
  auto fail = [&](int line, const std::string& key, const std::string& msg) {
    *err = ConfigError{line, key, msg};
    return false;
  };
  while (!r.eof()) {
    const int line = r.line();
    std::string key, why;
    if (!r.key(&key)) return fail(line, "", "expected a key (letters, digits, '_')");
    if (!r.expect('=')) return fail(line, key, "expected '=' after the key");
    Value v;
    if (!r.value(&v, &why)) return fail(line, key, why);
    if (!r.end_of_statement()) return fail(r.line(), key, "unexpected text after the value");
    if (!seen.insert(key).second) return fail(line, key, "given twice");
    c.key_lines[key] = line;

    auto want = [&](Value::Kind k, const char* what) {
      if (v.kind == k) return true;
      *err = ConfigError{line, key, std::string("expected ") + what};
      return false;
    };
    std::uint64_t n = 0;
    if (key == "name") {
      if (!want(Value::Kind::String, "a quoted name")) return false;
      if (v.text.empty() || v.text.size() > 64 || v.text.find('/') != std::string::npos)
        return fail(line, key, "a name is 1 to 64 characters without '/'");
      c.name = v.text;
    } else if (key == "memory" || key == "maxmem") {
      if (!want(Value::Kind::Number, "a number of MiB")) return false;
      if (!to_uint(v.text, 1u << 20, &n) || n == 0)
        return fail(line, key, "'" + v.text + "' is not a size in MiB (1 to 1048576)");
      if (key == "memory") c.memory_mib = n;
    } else if (key == "vcpus" || key == "maxvcpus") {
      if (!want(Value::Kind::Number, "a number")) return false;
      if (!to_uint(v.text, 64, &n) || n == 0) return fail(line, key, "1 to 64 vCPUs");
      if (key == "vcpus") c.vcpus = static_cast<unsigned>(n);
    } else if (key == "kernel") {
      if (!want(Value::Kind::String, "a quoted path")) return false;
      c.kernel = resolve(base_dir, v.text);
    } else if (key == "cmdline" || key == "extra") {
      if (!want(Value::Kind::String, "a quoted command line")) return false;
      c.cmdline = v.text;
    } else if (key == "domid") {
      if (!want(Value::Kind::Number, "a number")) return false;
      if (!to_uint(v.text, 0x7FEF, &n) || n == 0) return fail(line, key, "1 to 32751");
      c.domid = static_cast<std::uint32_t>(n);
    } else if (key == "type") {
      if (!want(Value::Kind::String, "a quoted type")) return false;
      if (v.text != "pvh" && v.text != "hvm")
        return fail(line, key, "pvio runs 'pvh' and 'hvm' guests (user-mode domains have no kernel)");
    } else if (key == "disk") {
      if (!want(Value::Kind::List, "a [list] of disk specifications")) return false;
      for (const auto& item : v.items) {
        DiskConfig d;
        if (!disk_entry(item, base_dir, &d, &why)) return fail(line, key, why);
        c.disks.push_back(d);
      }
    } else if (key == "vif") {
      if (!want(Value::Kind::List, "a [list] of vif specifications")) return false;
      for (const auto& item : v.items) {
        VifConfig vs;
        if (!vif_entry(item, &vs, &why)) return fail(line, key, why);
        c.vifs.push_back(vs);
      }
    } else if (key == "on_poweroff" || key == "on_reboot" || key == "on_crash") {
      if (!want(Value::Kind::String, "'destroy', 'restart' or 'preserve'")) return false;
      OnEvent e;
      if (!parse_on_event(v.text, &e))
        return fail(line, key, "'" + v.text + "' is not destroy, restart or preserve");
      (key == "on_poweroff" ? c.on_poweroff : key == "on_reboot" ? c.on_reboot : c.on_crash) = e;
    } else {
      return fail(line, key, "unknown key");
    }
  }
  if (c.name.empty()) return fail(0, "name", "every domain needs a name");
  *out = c;
  return true;
}

}  // namespace pvio::cli
