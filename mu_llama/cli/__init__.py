"""The `mu-llama` command line. Only parses input and calls library functions; the library never imports it."""
