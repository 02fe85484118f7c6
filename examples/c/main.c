/*
 * owlet C example: answer one prompt about zero or more images, streaming the text.
 *
 *   owlet-example MODEL.gguf [-t THREADS] [-n MAX_TOKENS] [--ignore-eos] [--image PATH]...
 *                 PROMPT
 *
 * Prints the answer, a newline, then the generated token ids as a comma list: the same two
 * lines as `owlet run -m MODEL --image PATH -p PROMPT --print-ids` (the CI compares them).
 * (Images from memory go through owlet_session_add_image_rgb / _rgba instead.)
 *
 * Uses only include/owlet.h and the static library libowlet.a.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "owlet.h"

/* Generated ids, collected by the token callback. */
typedef struct {
    int32_t *ids;
    size_t len, cap;
} id_list;

static int on_token(void *user, int32_t id, const char *piece) {
    id_list *l = (id_list *)user;
    if (l->len == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        int32_t *ids = (int32_t *)realloc(l->ids, cap * sizeof *ids);
        if (!ids) return 1; /* stop: out of memory */
        l->ids = ids;
        l->cap = cap;
    }
    l->ids[l->len++] = id;
    fputs(piece, stdout);
    fflush(stdout);
    return 0; /* go on */
}

static int fail(const char *what, owlet_status rc) {
    fprintf(stderr, "owlet-example: %s failed (status %d): %s\n", what, (int)rc, owlet_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL;
    owlet_model_params mp = owlet_model_params_default();
    owlet_generate_params gp = owlet_generate_params_default();
    owlet_model *model = NULL;
    owlet_session *session = NULL;
    owlet_status rc;
    id_list ids = {NULL, 0, 0};
    int32_t stop = -1;
    int i, status = 1;

    if (argc < 3) {
        fprintf(stderr,
                "usage: %s MODEL.gguf [-t THREADS] [-n MAX_TOKENS] [--ignore-eos] "
                "[--image PATH]... PROMPT\n(owlet %s)\n",
                argv[0], owlet_version());
        return 2;
    }
    model_path = argv[1];
    /* First pass: options that the model and generation need. */
    for (i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) mp.threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) gp.max_tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ignore-eos")) gp.ignore_eos = 1;
        else if (!strcmp(argv[i], "--image") && i + 1 < argc) i++;
        else prompt = argv[i];
    }
    if (!prompt) {
        fprintf(stderr, "owlet-example: no prompt given\n");
        return 2;
    }

    if ((rc = owlet_model_load(model_path, &mp, &model)) != OWLET_OK) return fail("owlet_model_load", rc);
    fprintf(stderr, "owlet %s, kernels %s\n", owlet_version(), owlet_model_kernels(model));
    if ((rc = owlet_session_new(model, &session)) != OWLET_OK) {
        fail("owlet_session_new", rc);
        goto done;
    }
    /* Second pass: images, in order. */
    for (i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--image") && i + 1 < argc) {
            if ((rc = owlet_session_add_image_file(session, argv[++i])) != OWLET_OK) {
                fail("owlet_session_add_image_file", rc);
                goto done;
            }
        } else if (!strcmp(argv[i], "-t") || !strcmp(argv[i], "-n")) {
            i++;
        }
    }
    if ((rc = owlet_session_prompt(session, prompt)) != OWLET_OK) {
        fail("owlet_session_prompt", rc);
        goto done;
    }
    rc = owlet_session_generate(session, &gp, on_token, &ids, &stop);
    if (rc != OWLET_OK) {
        fail("owlet_session_generate", rc);
        goto done;
    }
    printf("\n");
    for (size_t k = 0; k < ids.len; k++) printf(k ? ",%d" : "%d", (int)ids.ids[k]);
    printf("\n");
    fprintf(stderr, "stop reason %d, %zu tokens\n", (int)stop, ids.len);
    status = 0;

done:
    owlet_session_free(session);
    owlet_model_free(model);
    free(ids.ids);
    return status;
}
