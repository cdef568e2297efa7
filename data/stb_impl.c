/* stb_impl.c — the one compiled copy of stb_image and stb_image_write (Debian libstb-dev
 * headers).  Everything else includes <stb_image.h> / <stb_image_write.h> without the
 * IMPLEMENTATION macros; the project loads images through data/image.h. */
#include <string.h>

/* stb calls memcpy(NULL, src, 0) on some malformed PNGs (zero-length chunks before any data):
 * harmless, but undefined behaviour that `make asan` (-fno-sanitize-recover=undefined) would
 * abort on.  Route stb's memcpy through a wrapper that skips empty copies. */
static inline void *stb_memcpy0(void *d, const void *s, size_t n) { return n ? memcpy(d, s, n) : d; }
#define memcpy(d, s, n) stb_memcpy0((d), (s), (n))

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_NO_HDR
#define STBI_NO_JPEG   /* JPEG is decoded by libjpeg-turbo (data/jpeg.c) */
#define STBI_NO_LINEAR
#define STBI_MAX_DIMENSIONS 65535
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <stb_image.h>
#include <stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
