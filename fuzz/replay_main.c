/*
 * A main for the fuzz targets without libFuzzer: runs LLVMFuzzerTestOneInput
 * once on every file of the directories (or files) named on the command line.
 *
 * The Bazel toolchain is gcc, which has no libFuzzer, so //fuzz builds each
 * target with this driver instead and replays its seed corpus: the targets
 * compile with every `bazel test //...` (a change to the code they link
 * breaks them there, not only under fuzz/build.sh), and the seeds run under
 * --config=asan. Finding new inputs stays the job of fuzz/run.sh.
 *
 * Exits 1 when it ran no input at all (a missing corpus is a broken test, not
 * a pass); a broken invariant aborts in the target (FZ_CHECK).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs the target on the file at path. Returns 0, or -1 when unreadable. */
static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  uint8_t *data = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len == cap) {
      cap = cap ? cap * 2 : 4096;
      uint8_t *grown = realloc(data, cap);
      if (!grown) {
        free(data);
        fclose(f);
        return -1;
      }
      data = grown;
    }
    size_t n = fread(data + len, 1, cap - len, f);
    len += n;
    if (n == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  /* An exact-size copy, so that ASan sees any read past the input. */
  uint8_t *exact = bad ? NULL : malloc(len ? len : 1);
  if (exact) {
    if (len) memcpy(exact, data, len);
    LLVMFuzzerTestOneInput(exact, len);
  }
  free(exact);
  free(data);
  return exact ? 0 : -1;
}

int main(int argc, char **argv) {
  long runs = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "replay: %s: not found\n", argv[i]);
      return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
      if (run_file(argv[i]) != 0) {
        fprintf(stderr, "replay: %s: cannot read\n", argv[i]);
        return 1;
      }
      runs++;
      continue;
    }
    struct dirent **names;
    int n = scandir(argv[i], &names, NULL, alphasort); /* sorted: the same order every run */
    if (n < 0) {
      fprintf(stderr, "replay: %s: cannot open\n", argv[i]);
      return 1;
    }
    int bad = 0;
    for (int k = 0; k < n; k++) {
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", argv[i], names[k]->d_name);
      if (names[k]->d_name[0] != '.' && !bad) {
        if (run_file(path) != 0) {
          fprintf(stderr, "replay: %s: cannot read\n", path);
          bad = 1;
        } else {
          runs++;
        }
      }
      free(names[k]);
    }
    free(names);
    if (bad) return 1;
  }
  printf("replay: %ld input(s)\n", runs);
  return runs > 0 ? 0 : 1;
}
