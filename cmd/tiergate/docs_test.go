package main

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the repository, seen from this package's directory.
const repoRoot = "../.."

// outsideDocs are documents that are not in the repository: a reader of a
// comment or a doc cannot open them, so nothing may cite them. (Spelt in
// pieces so this file does not cite them either.)
var outsideDocs = []string{"DESIGN" + ".md", "PROTOCOLS" + ".md"}

// contractsCitation finds a citation of docs/contracts.md followed by the
// quoted titles of its sections (after a comma, in parentheses, or both),
// in text whose comment markers have been joined into one line.
var contractsCitation = regexp.MustCompile(`docs/contracts\.md,?\s*\(?\s*("[^"\n]+"(?:\s*(?:,|and)\s*"[^"\n]+")*)`)

// quoted is one quoted section title of a citation.
var quoted = regexp.MustCompile(`"([^"\n]+)"`)

// commentBreak is a line break inside a comment, with the next line's
// marker: citations are matched across it.
var commentBreak = regexp.MustCompile(`\n\s*(?://|#)\s*`)

// repoFiles returns the text files of the repository, path and content,
// leaving out what tools put there (.git, node_modules) and binaries.
func repoFiles(t *testing.T) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name == ".git" || name == "node_modules" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.IndexByte(b, 0) >= 0 {
			return nil
		}
		rel, _ := filepath.Rel(repoRoot, path)
		files[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no files found under the repository root")
	}
	return files
}

// TestNothingCitesDocumentsOutsideTheRepository: comments, docs, manifests
// and scripts point at what a reader can open (docs/contracts.md, the
// README, the protos), never at design notes kept elsewhere; and every
// section of docs/contracts.md a file cites is one it has.
func TestNothingCitesDocumentsOutsideTheRepository(t *testing.T) {
	t.Parallel()
	files := repoFiles(t)
	contracts, ok := files["docs/contracts.md"]
	if !ok {
		t.Fatal("docs/contracts.md is missing")
	}
	var sections []string
	for _, l := range strings.Split(string(contracts), "\n") {
		if h, ok := strings.CutPrefix(l, "## "); ok {
			sections = append(sections, h)
		}
	}
	cited := 0
	for name, b := range files {
		for _, doc := range outsideDocs {
			if i := bytes.Index(b, []byte(doc)); i >= 0 {
				line := 1 + bytes.Count(b[:i], []byte("\n"))
				t.Errorf("%s:%d cites %s, which is not in the repository: point it at docs/contracts.md, the README or a proto", name, line, doc)
			}
		}
		for _, m := range contractsCitation.FindAllStringSubmatch(commentBreak.ReplaceAllString(string(b), " "), -1) {
			for _, q := range quoted.FindAllStringSubmatch(m[1], -1) {
				cited++
				if !slices.Contains(sections, q[1]) {
					t.Errorf("%s cites docs/contracts.md section %q, which it does not have (sections: %q)", name, q[1], sections)
				}
			}
		}
	}
	if cited == 0 {
		t.Error("no citation of a docs/contracts.md section found: the pattern no longer matches how files cite it")
	}
}
