package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tiergate/tiergate/internal/kubeletdir"
)

// transact sends one policed request through ext_proc as Envoy does and
// returns the HTTP status tiergate gives it: 200 when forwarded, or the
// immediate response's status. A forwarded request gets response as its
// JSON response body, when that is not "".
func transact(ctx context.Context, c extprocv3.ExternalProcessorClient, body, response string) (int, error) {
	s, err := c.Process(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = s.CloseSend() }()
	hdr := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":method", RawValue: []byte("POST")},
		{Key: ":path", RawValue: []byte("/v1/responses")},
		{Key: "content-length", RawValue: []byte(fmt.Sprint(len(body)))},
	}}
	msgs := []*extprocv3.ProcessingRequest{
		{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hdr}}},
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: true}}},
	}
	for i, m := range msgs {
		if err := s.Send(m); err != nil {
			return 0, err
		}
		r, err := s.Recv()
		if err != nil {
			return 0, err
		}
		if ir := r.GetImmediateResponse(); ir != nil {
			return int(ir.GetStatus().GetCode()), nil
		}
		if i == 1 && r.GetRequestBody() == nil {
			return 0, fmt.Errorf("answer to the body: %T", r.Response)
		}
	}
	if response == "" {
		return 200, nil
	}
	for _, m := range []*extprocv3.ProcessingRequest{
		{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":status", RawValue: []byte("200")}, {Key: "content-type", RawValue: []byte("application/json")},
		}}}}},
		{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte(response), EndOfStream: true}}},
	} {
		if err := s.Send(m); err != nil {
			return 0, err
		}
		if _, err := s.Recv(); err != nil {
			return 0, err
		}
	}
	return 200, nil
}

// TestConfigMapUpdateUnderLoad publishes a new policy exactly as the kubelet
// does while requests flow: none may fail, and the new policy must be in
// force within 2 s.
func TestConfigMapUpdateUnderLoad(t *testing.T) {
	t.Parallel()
	dir, err := kubeletdir.New(t.TempDir(), "tiergate.yaml", []byte("rules: [{name: v1, service_tier: priority, action: filter}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, addrs, _ := startServe(t, "--config", dir.File(), "--admin-listen", "127.0.0.1:0",
		"--extproc-listen", "unix://"+filepath.Join(t.TempDir(), "x.sock"), "--usage-log", "off")
	conn, err := grpc.NewClient(addrs["extproc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := extprocv3.NewExternalProcessorClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var (
		sent, failed atomic.Int64
		firstBlock   atomic.Int64 // unix nanos of the first 403
		mu           sync.Mutex
		errs         []error
		stop         = make(chan struct{})
		wg           sync.WaitGroup
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				status, err := transact(ctx, client, `{"model":"gpt-5.5","service_tier":"priority"}`, "")
				sent.Add(1)
				switch {
				case err != nil:
					failed.Add(1)
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				case status == 403:
					firstBlock.CompareAndSwap(0, time.Now().UnixNano())
				case status != 200:
					failed.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	published := time.Now()
	if err := dir.Update([]byte("rules: [{name: v2, service_tier: priority, action: block}]\n")); err != nil {
		t.Fatal(err)
	}
	deadline := published.Add(2 * time.Second)
	for firstBlock.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // keep the load on after the switch
	close(stop)
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed during the update: %v", failed.Load(), sent.Load(), errs)
	}
	fb := firstBlock.Load()
	if fb == 0 {
		t.Fatalf("the new policy was not in force 2s after the kubelet published it (%d requests sent)", sent.Load())
	}
	t.Logf("%d requests, none failed; new policy in force %v after publication", sent.Load(), time.Unix(0, fb).Sub(published))
}
