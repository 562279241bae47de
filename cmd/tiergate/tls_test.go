package main

import (
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tiergate/tiergate/internal/testcert"
)

// TestServeWebSocketTLS: with --ws-tls-cert and --ws-tls-key the bridge
// listens with TLS (for Envoy's upstream TLS to the sidecar), and a turn
// runs over wss:// as it does in plain text.
func TestServeWebSocketTLS(t *testing.T) {
	t.Parallel()
	certs := testcert.New(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, certs.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, certs.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	_, addrs, usage := startServe(t, "--ws-upstream", fakeResponsesUpstream(t), "--ws-tls-cert", certFile, "--ws-tls-key", keyFile)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certs.Pool}}}
	wsTurn(t, "wss://"+addrs["websocket"]+"/v1/responses", client)

	// Plain text is not served on the TLS listener.
	resp, err := http.Get("http://" + addrs["websocket"] + "/v1/responses")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS listener: %d, want 400 (the client sent HTTP to an HTTPS server)", resp.StatusCode)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(usage.String(), `"endpoint":"responses_ws"`) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(usage.String(), `"endpoint":"responses_ws"`) {
		t.Errorf("no usage record for the turn over TLS:\n%s", usage.String())
	}
}
