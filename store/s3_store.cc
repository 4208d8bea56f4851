// SPDX-License-Identifier: MIT
// ObjectStore on an S3 bucket (Ceph's radosgw, or any service speaking S3)
// through libcurl, whose built-in AWS Signature V4 signs every request.
#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>

#include "store/store_url.h"  // StoreRoot
#include "store/object_store.h"

namespace vmsnap::store {
namespace {

// The mark is an object tag: S3 changes a tag in place (radosgw rewrites
// only the object's attributes, and its modification time), where metadata
// could only change by copying the whole object onto itself.
constexpr char kMarkTag[] = "vmsnap-mark";
// A request that moves no byte for this long fails (VMSNAP_S3_TIMEOUT may
// set another limit): a gateway whose cluster is gone keeps the connection
// open and never answers.
constexpr long kStallS = 30;
constexpr long kConnectS = 10;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// S3's URI encoding: everything but the unreserved characters, uppercase hex;
// '/' kept in a key's path. The request goes out exactly as signed, so the
// gateway computes the same canonical request.
std::string UriEncode(const std::string& s, bool keep_slash) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string XmlUnescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out += s[i];
      continue;
    }
    const size_t semi = s.find(';', i);
    if (semi == std::string::npos) {
      out += s.substr(i);
      break;
    }
    const std::string ent = s.substr(i + 1, semi - i - 1);
    if (ent == "amp") out += '&';
    else if (ent == "lt") out += '<';
    else if (ent == "gt") out += '>';
    else if (ent == "quot") out += '"';
    else if (ent == "apos") out += '\'';
    else if (ent.size() > 1 && ent[0] == '#') {
      const long cp = ent[1] == 'x' ? std::strtol(ent.c_str() + 2, nullptr, 16) : std::strtol(ent.c_str() + 1, nullptr, 10);
      // Keys are UTF-8; encode the code point back.
      if (cp < 0x80) {
        out += static_cast<char>(cp);
      } else if (cp < 0x800) {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
      } else if (cp < 0x10000) {
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
      } else {
        out += static_cast<char>(0xf0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
      }
    } else {
      out += s.substr(i, semi - i + 1);
    }
    i = semi;
  }
  return out;
}

std::string XmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '&') out += "&amp;";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else out += c;
  }
  return out;
}

// The text of every <tag>...</tag> in an S3 XML answer, in order. S3's
// answers are flat enough that this is all the parsing they need.
std::vector<std::string> XmlValues(const std::string& xml, const std::string& tag) {
  std::vector<std::string> out;
  const std::string open = "<" + tag + ">", close = "</" + tag + ">";
  size_t at = 0;
  while ((at = xml.find(open, at)) != std::string::npos) {
    at += open.size();
    const size_t end = xml.find(close, at);
    if (end == std::string::npos) break;
    out.push_back(XmlUnescape(xml.substr(at, end - at)));
    at = end + close.size();
  }
  return out;
}

// Where a GET's body goes when the caller gave its own buffer (ReadSized):
// `room` bytes at `out`; `got` counts the whole body, kept or not.
struct Sink {
  uint8_t* out = nullptr;
  uint64_t room = 0, got = 0;
};

struct Response {
  long status = 0;
  long line_status = 0;  // of the last status line seen: OnBody's guide
  Sink* sink = nullptr;  // a 200 answer's body goes there, not to `body`
  std::vector<uint8_t> body;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string Text() const { return std::string(body.begin(), body.end()); }
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

size_t OnBody(char* p, size_t size, size_t n, void* user) {
  auto* r = static_cast<Response*>(user);
  const size_t len = size * n;
  if (r->sink != nullptr && r->line_status == 200) {
    // The object itself, straight into the caller's buffer; an error's XML
    // stays in `body` for Error().
    Sink& k = *r->sink;
    if (k.got < k.room) std::memcpy(k.out + k.got, p, std::min<uint64_t>(len, k.room - k.got));
    k.got += len;
    return len;
  }
  r->body.insert(r->body.end(), p, p + len);
  return len;
}

size_t OnHeader(char* p, size_t size, size_t n, void* user) {
  auto* r = static_cast<Response*>(user);
  std::string line(p, size * n);
  if (line.rfind("HTTP/", 0) == 0) {
    r->headers.clear();  // an interim answer (100 Continue) came first
    const size_t sp = line.find(' ');
    r->line_status = sp == std::string::npos ? 0 : std::strtol(line.c_str() + sp + 1, nullptr, 10);
    return size * n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string::npos) return size * n;
  std::string name = line.substr(0, colon);
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  size_t b = colon + 1, e = line.size();
  while (b < e && (line[b] == ' ' || line[b] == '\t')) ++b;
  while (e > b && (line[e - 1] == '\r' || line[e - 1] == '\n' || line[e - 1] == ' ')) --e;
  r->headers[name] = line.substr(b, e - b);
  return size * n;
}

class S3Store final : public ObjectStore {
 public:
  S3Store(std::string bucket, std::string prefix, S3Config cfg)
      : bucket_(std::move(bucket)), prefix_(std::move(prefix)), cfg_(std::move(cfg)) {
    where_ = StoreRoot(StoreUrl{"s3", bucket_, prefix_.empty() ? "" : prefix_.substr(0, prefix_.size() - 1), "", ""});
    while (!cfg_.endpoint.empty() && cfg_.endpoint.back() == '/') cfg_.endpoint.pop_back();
    sigv4_ = "aws:amz:" + cfg_.region + ":s3";
  }
  ~S3Store() override {
    for (CURL* h : idle_) curl_easy_cleanup(h);
  }
  const std::string& where() const override { return where_; }

  // Whether the bucket is there and the keys open it: one cheap listing, so
  // a wrong bucket or key fails before any work with a line that says so.
  Status Check() {
    VMSNAP_ASSIGN_OR_RETURN(Response r, Call("GET", "", "list-type=2&max-keys=1", {}, {}));
    if (r.status != 200) return Error(r, "", "list the bucket");
    return Status::Ok();
  }

  Status Put(const std::string& name, std::span<const uint8_t> data, const std::string& mark) override {
    VMSNAP_ASSIGN_OR_RETURN(Response r, Call("PUT", Key(name), "",
                                             {"x-amz-tagging: " + std::string(kMarkTag) + "=" + UriEncode(mark, false)}, data));
    if (r.status != 200) return Error(r, name, "write");
    return Status::Ok();
  }

  // Tagging an object that does not exist fails with 404 and creates nothing.
  Status Touch(const std::string& name, const std::string& mark) override {
    const std::string xml = std::string("<Tagging><TagSet><Tag><Key>") + kMarkTag + "</Key><Value>" + XmlEscape(mark) +
                            "</Value></Tag></TagSet></Tagging>";
    VMSNAP_ASSIGN_OR_RETURN(Response r, Call("PUT", Key(name), "tagging=", {}, {reinterpret_cast<const uint8_t*>(xml.data()), xml.size()}));
    if (r.status != 200) return Error(r, name, "");
    return Status::Ok();
  }

  Result<std::vector<uint8_t>> Get(const std::string& name) override {
    VMSNAP_ASSIGN_OR_RETURN(Response r, Call("GET", Key(name), "", {}, {}));
    // A body shorter than its Content-Length is curl's own error
    // (CURLE_PARTIAL_FILE), reported by Call.
    if (r.status != 200) return Error(r, name, "read");
    return std::move(r.body);
  }

  // The body lands in `out` as it arrives: no response buffer, no copy.
  Result<uint64_t> ReadSized(const std::string& name, uint64_t size, uint8_t* out) override {
    Sink sink{out, size + 1, 0};
    VMSNAP_ASSIGN_OR_RETURN(Response r, Call("GET", Key(name), "", {}, {}, &sink));
    if (r.status != 200) return Error(r, name, "read");
    return std::min(sink.got, sink.room);
  }

  Result<std::string> Mark(const std::string& name, uint64_t* size) override {
    if (size != nullptr) {
      VMSNAP_ASSIGN_OR_RETURN(Response r, Call("HEAD", Key(name), "", {}, {}));
      if (r.status != 200) return Error(r, name, "");
      *size = std::strtoull(r.Header("content-length").c_str(), nullptr, 10);
    }
    return ReadMark(name);
  }

  Result<std::vector<std::string>> List(const std::string& prefix) override {
    std::vector<std::string> names;
    std::string token;
    for (;;) {
      // Parameters in the canonical (sorted) order, each encoded as signed.
      std::string query;
      if (!token.empty()) query += "continuation-token=" + UriEncode(token, false) + "&";
      query += "list-type=2&prefix=" + UriEncode(prefix_ + prefix, false);
      VMSNAP_ASSIGN_OR_RETURN(Response r, Call("GET", "", query, {}, {}));
      if (r.status != 200) return Error(r, "", "list");
      const std::string xml = r.Text();
      for (const std::string& key : XmlValues(xml, "Key")) {
        if (key.size() >= prefix_.size()) names.push_back(key.substr(prefix_.size()));
      }
      const auto truncated = XmlValues(xml, "IsTruncated");
      const auto next = XmlValues(xml, "NextContinuationToken");
      if (truncated.empty() || truncated[0] != "true") break;
      if (next.empty() || next[0].empty() || next[0] == token) {
        return Status::Io(where_ + ": list: the answer is truncated but names no continuation");
      }
      token = next[0];
    }
    return names;
  }

  // S3 has no compare-and-delete. The object's modification time is read
  // first, then its mark is compared once more, and the delete carries
  // radosgw's x-amz-delete-if-unmodified-since with that time: a push that
  // marks the object after the first read (a new tag, a new modification
  // time) is seen by the comparison or makes the delete fail with 412.
  // The times are whole seconds, so a mark set within the second of the
  // modification time read would not count as "modified since": an object
  // the gateway's own clock (the answer's Date) says was modified within
  // the last second is kept, and any later mark lands in a later second.
  Result<bool> RemoveIfMark(const std::string& name, const std::string& mark) override {
    VMSNAP_ASSIGN_OR_RETURN(Response head, Call("HEAD", Key(name), "", {}, {}));
    if (head.status != 200) return Error(head, name, "");
    VMSNAP_ASSIGN_OR_RETURN(std::string now, ReadMark(name));
    if (now != mark) return false;
    const time_t mtime = curl_getdate(head.Header("last-modified").c_str(), nullptr);
    const time_t date = curl_getdate(head.Header("date").c_str(), nullptr);
    if (mtime < 0 || date < 0) return Status::Io(Where(name) + ": the gateway gave no modification time or date; kept");
    if (mtime + 1 >= date) return false;
    char when[32];
    struct tm tm {};
    gmtime_r(&mtime, &tm);
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    BeforeRemove(name);
    VMSNAP_ASSIGN_OR_RETURN(Response r,
                            Call("DELETE", Key(name), "", {std::string("x-amz-delete-if-unmodified-since: ") + when}, {}));
    if (r.status == 412) return false;
    if (r.status != 204 && r.status != 200) return Error(r, name, "remove");
    return true;
  }

  Status Remove(const std::string& name) override {
    VMSNAP_ASSIGN_OR_RETURN(Response r, Call("DELETE", Key(name), "", {}, {}));
    if (r.status != 204 && r.status != 200) return Error(r, name, "remove");
    return Status::Ok();
  }

 private:
  std::string Key(const std::string& name) const { return prefix_ + name; }

  // The value of the mark tag; empty when the object has none.
  Result<std::string> ReadMark(const std::string& name) {
    VMSNAP_ASSIGN_OR_RETURN(Response r, Call("GET", Key(name), "tagging=", {}, {}));
    if (r.status != 200) return Error(r, name, "read its tags");
    const std::string xml = r.Text();
    const auto keys = XmlValues(xml, "Key"), values = XmlValues(xml, "Value");
    for (size_t i = 0; i < keys.size() && i < values.size(); ++i) {
      if (keys[i] == kMarkTag) return values[i];
    }
    return std::string();
  }
  std::string Where(const std::string& name) const { return "s3://" + bucket_ + "/" + Key(name); }

  // One line from an S3 error answer: the HTTP status, S3's error code, and
  // what the user can do about the common ones.
  Status Error(const Response& r, const std::string& name, const std::string& what) const {
    const auto codes = XmlValues(r.Text(), "Code");
    const std::string code = codes.empty() ? "" : codes[0];
    const std::string at = name.empty() ? where_ : Where(name);
    const std::string head = at + (what.empty() ? "" : ": " + what) + ": HTTP " + std::to_string(r.status) +
                             (code.empty() ? "" : " " + code);
    if (code == "NoSuchBucket") return Status::NotFound("s3://" + bucket_ + ": no such bucket (HTTP 404 NoSuchBucket)");
    if (r.status == 404) return Status::NotFound(at + ": no such object");
    if (code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || r.status == 403) {
      return Status::Io(head + " (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION)");
    }
    if (code == "QuotaExceeded" || r.status == 507) return Status::NoSpace(head);
    return Status::Io(head);
  }

  CURL* Acquire() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!idle_.empty()) {
        CURL* h = idle_.back();
        idle_.pop_back();
        return h;
      }
    }
    return curl_easy_init();
  }
  // Handles are kept, and with them their open connections to the gateway.
  void Release(CURL* h) {
    std::lock_guard<std::mutex> l(mu_);
    idle_.push_back(h);
  }

  Result<Response> Call(const std::string& method, const std::string& key, const std::string& query,
                        const std::vector<std::string>& headers, std::span<const uint8_t> body,
                        Sink* sink = nullptr) {
    CURL* h = Acquire();
    if (h == nullptr) return Status::Internal(where_ + ": curl_easy_init failed");
    curl_easy_reset(h);
    const std::string url = cfg_.endpoint + "/" + UriEncode(bucket_, false) + (key.empty() ? "" : "/" + UriEncode(key, true)) +
                            (query.empty() ? "" : "?" + query);
    Response resp;
    resp.sink = sink;
    curl_slist* hl = nullptr;
    // Signed as "unsigned payload": radosgw requires the header for V4, and
    // every chunk is checked against its SHA-256 name when it is read.
    hl = curl_slist_append(hl, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    if (!cfg_.session_token.empty()) hl = curl_slist_append(hl, ("x-amz-security-token: " + cfg_.session_token).c_str());
    if (method == "PUT") hl = curl_slist_append(hl, "Content-Type: application/octet-stream");
    for (const std::string& x : headers) hl = curl_slist_append(hl, x.c_str());
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sigv4_.c_str());
    curl_easy_setopt(h, CURLOPT_USERNAME, cfg_.access_key.c_str());
    curl_easy_setopt(h, CURLOPT_PASSWORD, cfg_.secret_key.c_str());
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, kConnectS);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, cfg_.stall_s);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &resp);
    if (method == "HEAD") {
      curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (method == "PUT") {
      // The body goes as "post fields" under the PUT method: curl then sends
      // it straight away. As an upload, curl would first ask with "Expect:
      // 100-continue" and wait for an answer radosgw does not always give
      // (a second per object); that header cannot be dropped either, since
      // the signature covers the headers.
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.empty() ? "" : reinterpret_cast<const char*>(body.data()));
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    } else if (method != "GET") {
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
    }
    const CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hl);
    if (rc != CURLE_OK) {
      // A broken connection is not worth keeping.
      curl_easy_cleanup(h);
      const std::string at = key.empty() ? where_ : "s3://" + bucket_ + "/" + key;
      if (rc == CURLE_OPERATION_TIMEDOUT) {
        return Status::Io(at + ": " + cfg_.endpoint + " did not answer within " + std::to_string(cfg_.stall_s) + " s");
      }
      return Status::Io(at + ": " + cfg_.endpoint + ": " + curl_easy_strerror(rc));
    }
    Release(h);
    resp.status = status;
    return resp;
  }

  std::string bucket_, prefix_, where_, sigv4_;
  S3Config cfg_;
  std::mutex mu_;
  std::vector<CURL*> idle_;
};

}  // namespace

Result<S3Config> S3ConfigFromEnv() {
  S3Config c;
  c.endpoint = Env("AWS_ENDPOINT_URL");
  c.region = Env("AWS_REGION");
  if (c.region.empty()) c.region = Env("AWS_DEFAULT_REGION");
  if (c.region.empty()) c.region = "us-east-1";
  if (c.endpoint.empty()) c.endpoint = "https://s3." + c.region + ".amazonaws.com";
  c.access_key = Env("AWS_ACCESS_KEY_ID");
  c.secret_key = Env("AWS_SECRET_ACCESS_KEY");
  c.session_token = Env("AWS_SESSION_TOKEN");
  if (c.access_key.empty() || c.secret_key.empty()) {
    return Status::InvalidArgument("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
  }
  c.stall_s = kStallS;
  if (const std::string t = Env("VMSNAP_S3_TIMEOUT"); !t.empty()) {
    char* end = nullptr;
    const long v = std::strtol(t.c_str(), &end, 10);
    if (end == t.c_str() || *end != '\0' || v < 1 || v > 3600) {
      return Status::InvalidArgument("VMSNAP_S3_TIMEOUT=" + t + ": not a number of seconds between 1 and 3600");
    }
    c.stall_s = v;
  }
  return c;
}

namespace {

void InitCurl() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

void PreloadS3() { InitCurl(); }

Result<std::unique_ptr<ObjectStore>> OpenS3(const std::string& bucket, const std::string& prefix, const S3Config& config) {
  InitCurl();
  std::string p = prefix;
  if (!p.empty() && p.back() != '/') p += '/';
  auto s = std::make_unique<S3Store>(bucket, p, config);
  Status checked = s->Check();
  if (!checked.ok()) return checked;
  return std::unique_ptr<ObjectStore>(std::move(s));
}

}  // namespace vmsnap::store
