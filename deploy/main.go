// Command deploy writes the Azure Functions package (`make package`): host.json,
// every function folder's function.json, the handler binary and the example
// requests, which SCHEDULED_REQUEST_FILE may name. Its tests check the
// package against deploy/azuredeploy.json, so a setting the template sets
// always finds what it points to.
package main

import (
	"archive/zip"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

func main() {
	root := flag.String("root", ".", "the repository's root")
	bin := flag.String("bin", "bin/handler", "the linux/amd64 handler binary")
	out := flag.String("o", "dist/remediator.zip", "the zip to write")
	flag.Parse()
	names, err := writeFile(*out, *root, *bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pack:", err)
		os.Exit(1)
	}
	fmt.Printf("%s: %d files\n", *out, len(names))
	for _, n := range names {
		fmt.Println("  " + n)
	}
}

func writeFile(out, root, bin string) ([]string, error) {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(out)
	if err != nil {
		return nil, err
	}
	names, err := write(f, root, bin)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return names, err
}

// contents lists the package's files: zip name → file on disk.
func contents(root, bin string) (map[string]string, error) {
	files := map[string]string{"host.json": filepath.Join(root, "host.json"), "bin/handler": bin}
	for _, pattern := range []string{"*/function.json", "examples/*.json"} {
		matches, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			return nil, err
		}
		for _, m := range matches {
			rel, err := filepath.Rel(root, m)
			if err != nil {
				return nil, err
			}
			files[filepath.ToSlash(rel)] = m
		}
	}
	return files, nil
}

// write puts the package's files into w as a zip and returns their names.
func write(w io.Writer, root, bin string) ([]string, error) {
	files, err := contents(root, bin)
	if err != nil {
		return nil, err
	}
	var names []string
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	zw := zip.NewWriter(w)
	for _, name := range names {
		if err := add(zw, name, files[name]); err != nil {
			return nil, err
		}
	}
	return names, zw.Close()
}

func add(zw *zip.Writer, name, path string) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer func() { _ = src.Close() }()
	// A fixed date: the same sources make the same zip.
	hdr := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)}
	mode := os.FileMode(0o644)
	if name == "bin/handler" {
		// The host starts the binary: it must stay executable after unzip.
		mode = 0o755
	}
	hdr.SetMode(mode)
	dst, err := zw.CreateHeader(hdr)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	return err
}
