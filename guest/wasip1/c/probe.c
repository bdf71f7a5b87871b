/* probe: a wasm32-wasip1 program in C (wasi-libc) for testing `zero convert` + `zero run`.
 * The Rust (guest/components/cli-hello/src/cli.rs) and AssemblyScript (../as) probes behave the
 * same:
 *   1. prints every argument, argv[0] included, as `arg: ARG` (one line each);
 *   2. prints `greeting: VALUE` when the variable GREETING is set;
 *   3. handles these flags in order:
 *      --save PATH   copies all of stdin into PATH (created or truncated), prints `saved N bytes`;
 *      --ls DIR      prints each entry of DIR except . and .., sorted, as `entry: NAME`;
 *      --exit N      the exit code (default 0).
 * A failure prints `error: ...` to stderr and exits with 1. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const char *path) {
    fprintf(stderr, "error: %s %s\n", what, path);
    exit(1);
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void save(const char *path) {
    FILE *out = fopen(path, "wb");
    if (!out) fail("cannot create", path);
    char buf[4096];
    size_t n, total = 0;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        if (fwrite(buf, 1, n, out) != n) fail("cannot write", path);
        total += n;
    }
    if (fclose(out) != 0) fail("cannot close", path);
    printf("saved %zu bytes\n", total);
}

static void list(const char *path) {
    DIR *dir = opendir(path);
    if (!dir) fail("cannot open directory", path);
    char *names[256];
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL && count < 256) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        names[count++] = strdup(e->d_name);
    }
    closedir(dir);
    qsort(names, count, sizeof names[0], by_name);
    for (size_t i = 0; i < count; i++) printf("entry: %s\n", names[i]);
}

int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) printf("arg: %s\n", argv[i]);
    const char *greeting = getenv("GREETING");
    if (greeting) printf("greeting: %s\n", greeting);
    int code = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--save") == 0 && i + 1 < argc) {
            save(argv[++i]);
        } else if (strcmp(argv[i], "--ls") == 0 && i + 1 < argc) {
            list(argv[++i]);
        } else if (strcmp(argv[i], "--exit") == 0 && i + 1 < argc) {
            code = atoi(argv[++i]);
        }
    }
    fflush(stdout);
    return code;
}
