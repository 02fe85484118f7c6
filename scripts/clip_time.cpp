// clip_time: times llama.cpp's CLIP encoder (the legacy `clip.h` API of examples/llava) on one
// image, for scripts/clip_vs_llamacpp.sh. Written for owlet; it only calls llama.cpp's public
// clip.h functions and is compiled against the user's own llama.cpp build.
//
//   clip_time quantize IN.gguf OUT.gguf TYPE     re-quantize an mmproj (TYPE: ggml type number,
//                                                 8 = Q8_0), with llama.cpp's own quantizer
//   clip_time time MODEL.gguf THREADS REPEATS    load, encode one warm-up image, then REPEATS
//                                                 timed encodes; prints `min_s=… median_s=…`
//
// The image is random f32 pixels in [-1, 1] of the model's image size (448 for ViT-L/14-448),
// laid out as `clip_encode_float_image` takes it (h × w × 3): speed does not depend on the
// values.
#include "clip.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

static int usage() {
    std::fprintf(stderr,
                 "usage: clip_time quantize IN.gguf OUT.gguf TYPE\n"
                 "       clip_time time MODEL.gguf THREADS REPEATS\n");
    return 2;
}

static int run_quantize(const char *in, const char *out, int type) {
    if (!clip_model_quantize(in, out, type)) {
        std::fprintf(stderr, "clip_time: quantizing %s to %s (type %d) failed\n", in, out, type);
        return 1;
    }
    return 0;
}

static int run_time(const char *path, int threads, int repeats) {
    clip_ctx *ctx = clip_model_load(path, 0);
    if (ctx == nullptr) {
        std::fprintf(stderr, "clip_time: %s: not a CLIP model llama.cpp can load\n", path);
        return 1;
    }
    const int side = clip_image_size(ctx);
    std::vector<float> pixels(static_cast<size_t>(side) * side * 3);
    std::mt19937 rng(1234);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (float &p : pixels) {
        p = dist(rng);
    }
    std::vector<float> out(clip_embd_nbytes(ctx) / sizeof(float));

    std::vector<double> secs;
    for (int i = 0; i <= repeats; i++) {
        const auto t0 = std::chrono::steady_clock::now();
        if (!clip_encode_float_image(ctx, threads, pixels.data(), side, side, out.data())) {
            std::fprintf(stderr, "clip_time: encoding failed\n");
            clip_free(ctx);
            return 1;
        }
        const auto t1 = std::chrono::steady_clock::now();
        if (i > 0) {  // the first encode is a warm-up (graph allocation, page faults)
            secs.push_back(std::chrono::duration<double>(t1 - t0).count());
        }
    }
    std::sort(secs.begin(), secs.end());
    double checksum = 0.0;
    for (float v : out) {
        checksum += v;
    }
    std::printf("image=%d threads=%d repeats=%d min_s=%.3f median_s=%.3f checksum=%g\n", side,
                threads, repeats, secs.front(), secs[secs.size() / 2], checksum);
    clip_free(ctx);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        return usage();
    }
    const std::string mode = argv[1];
    if (mode == "quantize") {
        return run_quantize(argv[2], argv[3], std::atoi(argv[4]));
    }
    if (mode == "time") {
        const int threads = std::atoi(argv[3]);
        const int repeats = std::atoi(argv[4]);
        if (threads < 1 || repeats < 1) {
            return usage();
        }
        return run_time(argv[2], threads, repeats);
    }
    return usage();
}
