// Package redistest runs a real redis-server for tests: Debian's, on a free
// loopback port, with its own configuration and data directory in the
// test's temporary directory (never the system service on 6379).
//
// A missing redis-server fails the test: the README's test command
// installs it, and a skipped test would hide that the shared budget store
// went untested.
package redistest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiergate/tiergate/internal/freeport"
	"github.com/tiergate/tiergate/internal/testcert"
)

// Options shape the server.
type Options struct {
	// Password, when set, is required of clients (requirepass).
	Password string
	// TLS, when set, makes the server speak TLS only, with this serving
	// certificate.
	TLS *testcert.Set
	// Users are ACL rules, one `user` line each ("tiergate on >pw ~k:* +get").
	Users []string
}

// Server is a redis-server a test started.
type Server struct {
	// Addr is 127.0.0.1:port.
	Addr string
	t    testing.TB
	opts Options
	dir  string
	conf string
	cmd  *exec.Cmd
}

// Binary returns the path of redis-server, failing t when there is none.
func Binary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/redis-server"); err == nil {
		return "/usr/bin/redis-server"
	}
	t.Fatal("redis-server is not installed: the budget store tests need a real Redis (Debian: apt-get install redis-server; the README's test command installs it)")
	return ""
}

// Start starts a server and stops it when the test ends. Its data is
// appended to a file fsynced on every write (appendonly yes, appendfsync
// always), so Stop and Restart lose nothing, as docs/deployment.md advises
// for production Redis.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := &Server{t: t, opts: opts, dir: t.TempDir()}
	s.Addr = freeport.Addr(t)
	s.writeConfig()
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// ClosedAddr returns a loopback address nothing listens on: a Redis that
// is down, for tests of what the store does without one. (The port was
// free a moment ago; another test taking it in between is as unlikely as
// with any free port.)
func ClosedAddr(t testing.TB) string {
	t.Helper()
	return freeport.Addr(t)
}

func (s *Server) writeConfig() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	lines := []string{
		"bind 127.0.0.1",
		"dir " + s.dir,
		"logfile " + filepath.Join(s.dir, "redis.log"),
		"save \"\"",
		"appendonly yes",
		"appendfsync always",
		"daemonize no",
	}
	if s.opts.TLS != nil {
		files := map[string][]byte{"ca.pem": s.opts.TLS.CAPEM, "cert.pem": s.opts.TLS.CertPEM, "key.pem": s.opts.TLS.KeyPEM}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(s.dir, name), b, 0o600); err != nil {
				s.t.Fatal(err)
			}
		}
		lines = append(lines, "port 0", "tls-port "+port,
			"tls-cert-file "+filepath.Join(s.dir, "cert.pem"),
			"tls-key-file "+filepath.Join(s.dir, "key.pem"),
			"tls-ca-cert-file "+filepath.Join(s.dir, "ca.pem"),
			"tls-auth-clients no")
	} else {
		lines = append(lines, "port "+port)
	}
	if s.opts.Password != "" {
		lines = append(lines, "requirepass "+s.opts.Password)
	}
	for _, u := range s.opts.Users {
		lines = append(lines, "user "+u)
	}
	s.conf = filepath.Join(s.dir, "redis.conf")
	if err := os.WriteFile(s.conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// Restart starts the server (again, after Stop) on the same port and data
// directory, and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatal("redistest: Restart of a running server")
	}
	cmd := exec.Command(Binary(s.t), s.conf)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.cmd = cmd
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := s.Client()
	defer c.Close()
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server on %s did not answer: %v\n%s", s.Addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop shuts the server down (SIGTERM: it syncs its append-only file and
// exits) and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// Client returns a client with the server's password and TLS, for tests
// to read back what a store wrote. The caller closes it.
func (s *Server) Client() *redis.Client {
	opts := &redis.Options{Addr: s.Addr, Password: s.opts.Password, Protocol: 2, DisableIdentity: true, MaxRetries: -1}
	if s.opts.TLS != nil {
		opts.TLSConfig = &tls.Config{RootCAs: s.opts.TLS.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	}
	return redis.NewClient(opts)
}

// CAFile writes the CA of a TLS server to a file and returns its path.
func (s *Server) CAFile() string {
	s.t.Helper()
	if s.opts.TLS == nil {
		s.t.Fatal("redistest: CAFile of a server without TLS")
	}
	return filepath.Join(s.dir, "ca.pem")
}

// String names the server in failures.
func (s *Server) String() string { return fmt.Sprintf("redis-server %s", s.Addr) }
