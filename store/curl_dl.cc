// SPDX-License-Identifier: MIT
// The libcurl functions the S3 store calls, loaded on first use instead of
// linked, for the reason rados_dl.cc gives for librados: linking libcurl
// (and through it libssh2, nghttp2, librtmp, the GSSAPI and LDAP libraries)
// cost every run of `vmsnap` about 440 page faults and 6 ms of CPU before
// main, although only s3:// URLs need it.
//
// Each function below has the signature <curl/curl.h> declares and forwards
// to the same symbol of libcurl.so.4, opened once. A store call that is not
// listed here fails to link (add it here). Where libcurl.so.4 cannot be
// opened, the calls fail as libcurl's own do when it cannot start
// (CURLE_FAILED_INIT, a null handle), and the store reports that.
#include <curl/curl.h>

#include <cstdarg>
#include <ctime>

#include "store/dl_library.h"

namespace {

constexpr char kSoname[] = "libcurl.so.4";
using Curl = vmsnap::store::dl::Library<kSoname>;

}  // namespace

extern "C" {

CURLcode curl_global_init(long flags) {
  static const auto fn = Curl::Symbol<CURLcode (*)(long)>("curl_global_init");
  return fn != nullptr ? fn(flags) : CURLE_FAILED_INIT;
}

CURL* curl_easy_init(void) {
  static const auto fn = Curl::Symbol<CURL* (*)(void)>("curl_easy_init");
  return fn != nullptr ? fn() : nullptr;
}

void curl_easy_cleanup(CURL* h) {
  static const auto fn = Curl::Symbol<void (*)(CURL*)>("curl_easy_cleanup");
  if (fn != nullptr) fn(h);
}

void curl_easy_reset(CURL* h) {
  static const auto fn = Curl::Symbol<void (*)(CURL*)>("curl_easy_reset");
  if (fn != nullptr) fn(h);
}

CURLcode curl_easy_perform(CURL* h) {
  static const auto fn = Curl::Symbol<CURLcode (*)(CURL*)>("curl_easy_perform");
  return fn != nullptr ? fn(h) : CURLE_FAILED_INIT;
}

const char* curl_easy_strerror(CURLcode code) {
  static const auto fn = Curl::Symbol<const char* (*)(CURLcode)>("curl_easy_strerror");
  return fn != nullptr ? fn(code) : "libcurl.so.4 could not be loaded";
}

curl_slist* curl_slist_append(curl_slist* list, const char* s) {
  static const auto fn = Curl::Symbol<curl_slist* (*)(curl_slist*, const char*)>("curl_slist_append");
  return fn != nullptr ? fn(list, s) : nullptr;
}

void curl_slist_free_all(curl_slist* list) {
  static const auto fn = Curl::Symbol<void (*)(curl_slist*)>("curl_slist_free_all");
  if (fn != nullptr) fn(list);
}

time_t curl_getdate(const char* p, const time_t* unused) {
  static const auto fn = Curl::Symbol<time_t (*)(const char*, const time_t*)>("curl_getdate");
  return fn != nullptr ? fn(p, unused) : -1;
}

// The option's number says the type of its one argument (curl.h's
// CURLOPTTYPE_* ranges): long, a pointer (object or function), curl_off_t,
// or a blob pointer.
CURLcode curl_easy_setopt(CURL* h, CURLoption option, ...) {
  static const auto fn = Curl::Symbol<CURLcode (*)(CURL*, CURLoption, ...)>("curl_easy_setopt");
  if (fn == nullptr) return CURLE_FAILED_INIT;
  va_list ap;
  va_start(ap, option);
  CURLcode rc;
  if (option < CURLOPTTYPE_OBJECTPOINT) {
    rc = fn(h, option, va_arg(ap, long));
  } else if (option < CURLOPTTYPE_OFF_T) {
    rc = fn(h, option, va_arg(ap, void*));
  } else if (option < CURLOPTTYPE_BLOB) {
    rc = fn(h, option, va_arg(ap, curl_off_t));
  } else {
    rc = fn(h, option, va_arg(ap, void*));
  }
  va_end(ap);
  return rc;
}

// Every CURLINFO_* takes a pointer to where the answer goes.
CURLcode curl_easy_getinfo(CURL* h, CURLINFO info, ...) {
  static const auto fn = Curl::Symbol<CURLcode (*)(CURL*, CURLINFO, ...)>("curl_easy_getinfo");
  if (fn == nullptr) return CURLE_FAILED_INIT;
  va_list ap;
  va_start(ap, info);
  CURLcode rc = fn(h, info, va_arg(ap, void*));
  va_end(ap);
  return rc;
}

}  // extern "C"
