// Package kubeletdir lays out a directory the way the kubelet lays out a
// ConfigMap volume, for tests of live reload: each version of the data in a
// timestamped directory, a ..data symlink to the current one, and each key's
// file a symlink through ..data. An update swaps ..data atomically (a rename
// over it) and then removes the old version, as the kubelet's atomic writer
// does.
package kubeletdir

import (
	"fmt"
	"os"
	"path/filepath"
)

// Dir is one ConfigMap volume.
type Dir struct {
	Path    string
	key     string
	version int
}

// New creates the volume in dir with one key holding content.
func New(dir, key string, content []byte) (*Dir, error) {
	d := &Dir{Path: dir, key: key}
	if err := d.Update(content); err != nil {
		return nil, err
	}
	if err := os.Symlink(filepath.Join("..data", key), filepath.Join(dir, key)); err != nil {
		return nil, fmt.Errorf("link %s: %w", key, err)
	}
	return d, nil
}

// File is the path a container reads: the key's symlink.
func (d *Dir) File() string { return filepath.Join(d.Path, d.key) }

// Update publishes new content the way the kubelet does.
func (d *Dir) Update(content []byte) error {
	d.version++
	ts := fmt.Sprintf("..2026_11_22_00_00_%02d.%09d", d.version%60, d.version)
	if err := os.Mkdir(filepath.Join(d.Path, ts), 0o755); err != nil {
		return fmt.Errorf("new data dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(d.Path, ts, d.key), content, 0o644); err != nil {
		return fmt.Errorf("write data: %w", err)
	}
	old, _ := os.Readlink(filepath.Join(d.Path, "..data"))
	tmp := filepath.Join(d.Path, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		return fmt.Errorf("link ..data_tmp: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(d.Path, "..data")); err != nil {
		return fmt.Errorf("swap ..data: %w", err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(d.Path, old)); err != nil {
			return fmt.Errorf("remove old data: %w", err)
		}
	}
	return nil
}
