package envoysim

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// recorder is an ext_proc server that continues every message and keeps
// the request body messages it was sent; with fail set it breaks the
// stream instead.
type recorder struct {
	extprocv3.UnimplementedExternalProcessorServer
	fail   bool
	mu     sync.Mutex
	bodies []*extprocv3.HttpBody
}

func (r *recorder) Process(s extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := s.Recv()
		if err != nil {
			return nil
		}
		if r.fail {
			return io.ErrUnexpectedEOF
		}
		resp := &extprocv3.ProcessingResponse{}
		switch m := req.Request.(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			resp.Response = &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}
		case *extprocv3.ProcessingRequest_RequestBody:
			r.mu.Lock()
			r.bodies = append(r.bodies, m.RequestBody)
			r.mu.Unlock()
			resp.Response = &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			resp.Response = &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}
		case *extprocv3.ProcessingRequest_ResponseBody:
			resp.Response = &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}
		}
		if err := s.Send(resp); err != nil {
			return nil
		}
	}
}

func newProxy(t *testing.T, rec *recorder, upstream http.Handler) *httptest.Server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(gs, rec)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	srv := httptest.NewServer(&Proxy{Client: extprocv3.NewExternalProcessorClient(conn), Upstream: up.URL})
	t.Cleanup(srv.Close)
	return srv
}

// TestBodyWithTrailersIsNotTheEndOfTheStream: as in real Envoy, a body
// followed by trailers reaches ext_proc without end_of_stream, and the
// trailers go on to the upstream.
func TestBodyWithTrailersIsNotTheEndOfTheStream(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		trailer  http.Header
		wantEOS  bool
		upstream string
	}{
		{"a body alone ends the stream", nil, true, ""},
		{"a body with trailers does not", http.Header{"X-Checksum": {"abc"}}, false, "abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := &recorder{}
			var gotTrailer string
			srv := newProxy(t, rec, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				gotTrailer = r.Trailer.Get("X-Checksum")
			}))
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/responses", io.NopCloser(strings.NewReader(`{"model":"m"}`)))
			req.ContentLength = -1
			req.Trailer = tc.trailer
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if len(rec.bodies) != 1 || rec.bodies[0].GetEndOfStream() != tc.wantEOS {
				t.Fatalf("body messages %v, want one with end_of_stream %v", rec.bodies, tc.wantEOS)
			}
			if gotTrailer != tc.upstream {
				t.Errorf("the upstream's trailer %q, want %q", gotTrailer, tc.upstream)
			}
		})
	}
}

// TestLocalFailureIsABare500: a broken ext_proc stream gets Envoy's 500,
// with no body.
func TestLocalFailureIsABare500(t *testing.T) {
	t.Parallel()
	srv := newProxy(t, &recorder{fail: true}, http.NotFoundHandler())
	resp, err := http.Post(srv.URL+"/v1/responses", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusInternalServerError || len(b) != 0 || resp.Header.Get("server") != "envoy" {
		t.Errorf("got %d %q (server %q), want a bare 500 from envoy", resp.StatusCode, b, resp.Header.Get("server"))
	}
}
