package wsbridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/coder/websocket"

	"github.com/tiergate/tiergate/policy"
)

// parseUpstream checks the upstream base URL: a WebSocket (or HTTP) URL with
// a host, an optional path prefix, and no query.
func parseUpstream(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("wsbridge: upstream %q: %w", s, err)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return nil, fmt.Errorf("wsbridge: upstream %q: the scheme must be ws, wss, http or https", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("wsbridge: upstream %q has no host", s)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("wsbridge: upstream %q: give only scheme, host and an optional path prefix", s)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// newUpstreamClient is the HTTP client the handshakes go through: the
// default transport's proxy and TLS settings, HTTP/1.1 only (an upgrade
// cannot ride HTTP/2), and redirects not followed (a 3xx goes back to the
// client as the upstream's answer, like any other refusal).
func newUpstreamClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ForceAttemptHTTP2 = false
	t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// dial opens the upstream session for r: the same path and query, the
// forwarded headers, the client's offered subprotocols, and compression
// without context takeover when the client offered compression too.
func (b *Bridge) dial(r *http.Request, pol *policy.Policy, offered []string) (*websocket.Conn, *http.Response, error) {
	target := *b.upstream
	target.Path = b.upstream.Path + r.URL.Path
	target.RawQuery = r.URL.RawQuery

	// The handshake ends when the dial timeout runs out, when the client
	// goes away, or when Shutdown's grace does.
	ctx, cancel := context.WithTimeout(r.Context(), b.opts.DialTimeout)
	defer cancel()
	stop := context.AfterFunc(b.force, cancel)
	defer stop()

	mode := websocket.CompressionDisabled
	if offersDeflate(r.Header) {
		mode = websocket.CompressionNoContextTakeover
	}
	c, resp, err := websocket.Dial(ctx, target.String(), &websocket.DialOptions{
		HTTPClient:      b.client,
		HTTPHeader:      upstreamHeaders(r.Header, pol.GroupHeader()),
		Subprotocols:    offered,
		CompressionMode: mode,
	})
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(b.opts.ReadLimit)
	return c, resp, nil
}

// dialFailed answers the client when the upstream could not be had: the
// upstream's own status, headers and body when it refused the handshake,
// 504 when the dial timed out, 502 when it failed otherwise.
func (b *Bridge) dialFailed(w http.ResponseWriter, r *http.Request, em *epMetrics, resp *http.Response, err error) {
	switch {
	case resp != nil && resp.StatusCode != http.StatusSwitchingProtocols:
		// websocket.Dial keeps the first 1024 bytes of the body.
		var body []byte
		if resp.Body != nil {
			body, _ = io.ReadAll(resp.Body)
		}
		copyHeaders(w.Header(), resp.Header, refusalResponseHeaders)
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
		em.upgrade(upgradeRefused)
		b.log.Debug("upstream refused the handshake", "endpoint", em.endpoint,
			"request_id", r.Header.Get("X-Request-Id"), "status", resp.StatusCode)
	case b.force.Err() != nil:
		refuseDraining(w, em)
	case r.Context().Err() != nil:
		// The client went away during the dial: there is no one to answer.
	case errors.Is(err, context.DeadlineExceeded):
		em.upgrade(upgradeTimeout)
		b.log.Warn("upstream dial timed out", "endpoint", em.endpoint, "upstream", b.upstream.Host,
			"timeout", b.opts.DialTimeout.String(), "request_id", r.Header.Get("X-Request-Id"))
		writeError(w, http.StatusGatewayTimeout, "upstream_timeout",
			"the upstream did not complete the WebSocket handshake within "+b.opts.DialTimeout.String())
	default:
		em.upgrade(upgradeUnreachable)
		b.log.Warn("upstream dial failed", "endpoint", em.endpoint, "upstream", b.upstream.Host,
			"err", err, "request_id", r.Header.Get("X-Request-Id"))
		writeError(w, http.StatusBadGateway, "upstream_unreachable", "the upstream could not be reached for a WebSocket session")
	}
}
