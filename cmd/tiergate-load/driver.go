package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// load is one run's traffic: streams concurrent workers, worker i on
// client i%len(clients), each running transactions back to back.
type load struct {
	clients   []extprocv3.ExternalProcessorClient
	streams   int
	body      []byte
	authority string
	expect    expectation
	// timeout bounds one transaction, as Envoy's message_timeout (10 s in
	// envoy/envoy.yaml) bounds each of its messages.
	timeout time.Duration
	// decodeAll decodes every answer in full (see answers.go).
	decodeAll bool
	// response sends the response half after the request body's answer.
	response bool
	// Transactions that start in [from, to) are counted; the ones before
	// from are warm-up. No transaction starts at or after to.
	from, to time.Time
}

// workerResult is what one worker saw in the measured window.
type workerResult struct {
	latencies []time.Duration
	errors    map[string]int    // by kind
	examples  map[string]string // one full message per kind
	lastEnd   time.Time         // when its last counted transaction ended
}

func (r *workerResult) fail(kind string, err error) {
	if r.errors == nil {
		r.errors, r.examples = map[string]int{}, map[string]string{}
	}
	r.errors[kind]++
	if _, ok := r.examples[kind]; !ok {
		r.examples[kind] = err.Error()
	}
}

// run runs every worker until l.to and returns their results.
func (l *load) run(ctx context.Context) []workerResult {
	results := make([]workerResult, l.streams)
	var wg sync.WaitGroup
	for i := range l.streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.worker(ctx, i, &results[i])
		}()
	}
	wg.Wait()
	return results
}

func (l *load) worker(ctx context.Context, i int, res *workerResult) {
	client := l.clients[i%len(l.clients)]
	msgs := newRequestMessages(i, l.authority, l.body)
	w := l.newWorkerState()
	// Room for a few seconds at a high rate, so appends rarely grow it
	// while the clock runs.
	res.latencies = make([]time.Duration, 0, 1<<14)
	for n := uint64(0); ; n++ {
		began := time.Now()
		if !began.Before(l.to) || ctx.Err() != nil {
			return
		}
		msgs.setRequestID(n)
		kind, err := l.transaction(ctx, client, msgs, w)
		ended := time.Now()
		if began.Before(l.from) || ctx.Err() != nil {
			continue // warm-up, or the run was interrupted
		}
		if err == nil {
			// Checked after the clock stops, so that the latency is the
			// server's and the transport's, not the checking's.
			if err = w.body.verify(w.bodyAnswer.b); err != nil {
				kind = err.Error()
			}
		}
		if err != nil {
			res.fail(kind, err)
			continue
		}
		res.latencies = append(res.latencies, ended.Sub(began))
		res.lastEnd = ended
	}
}

// workerState is one worker's answer buffers and checkers, reused from one
// transaction to the next.
type workerState struct {
	codec                             rawCodec
	headersAnswer, bodyAnswer         rawAnswer
	headers, body                     answerChecker
	respHeadersAnswer, respBodyAnswer rawAnswer
	respHeaders, respBody             answerChecker
}

func (l *load) newWorkerState() *workerState {
	return &workerState{
		codec:       newRawCodec(),
		headers:     answerChecker{check: checkHeadersAnswer, decodeAll: l.decodeAll},
		body:        answerChecker{check: l.expect.checkBodyAnswer, decodeAll: l.decodeAll},
		respHeaders: answerChecker{check: checkResponseHeadersAnswer, decodeAll: l.decodeAll},
		respBody:    answerChecker{check: checkResponseBodyAnswer, decodeAll: l.decodeAll},
	}
}

// transaction is one HTTP request as Envoy puts it through ext_proc with
// request headers SEND, request body BUFFERED and, unless l.response, the
// response phases off: open a stream, send the headers and await their
// answer, send the whole body and await its answer, (with l.response, the
// response headers and the response body as one STREAMED chunk, each
// awaited and checked), then end the stream and wait for the server to end
// it too. The body's answer is left in w.bodyAnswer for the caller to
// check; on failure, it returns the error and the kind it is counted under
// (the stage and the gRPC code, a bounded set).
func (l *load) transaction(ctx context.Context, client extprocv3.ExternalProcessorClient, msgs *requestMessages, w *workerState) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel() // on failure, resets the stream
	s, err := client.Process(ctx, grpc.ForceCodecV2(w.codec))
	if err != nil {
		return stageKind("open stream", err), err
	}
	if err := s.Send(msgs.headers); err != nil {
		return stageKind("send request_headers", err), err
	}
	if err := s.RecvMsg(&w.headersAnswer); err != nil {
		return stageKind("await request_headers answer", err), err
	}
	// Checked at once: an answer that turns the body off means Envoy
	// would not send it.
	if err := w.headers.verify(w.headersAnswer.b); err != nil {
		return err.Error(), err
	}
	if err := s.Send(msgs.body); err != nil {
		return stageKind("send request_body", err), err
	}
	if err := s.RecvMsg(&w.bodyAnswer); err != nil {
		return stageKind("await request_body answer", err), err
	}
	if l.response {
		if err := s.Send(msgs.respHeaders); err != nil {
			return stageKind("send response_headers", err), err
		}
		if err := s.RecvMsg(&w.respHeadersAnswer); err != nil {
			return stageKind("await response_headers answer", err), err
		}
		if err := w.respHeaders.verify(w.respHeadersAnswer.b); err != nil {
			return err.Error(), err
		}
		if err := s.Send(msgs.respBody); err != nil {
			return stageKind("send response_body", err), err
		}
		if err := s.RecvMsg(&w.respBodyAnswer); err != nil {
			return stageKind("await response_body answer", err), err
		}
		if err := w.respBody.verify(w.respBodyAnswer.b); err != nil {
			return err.Error(), err
		}
	}
	if err := s.CloseSend(); err != nil {
		return stageKind("close stream", err), err
	}
	extra, err := s.Recv()
	switch {
	case err == nil:
		err = fmt.Errorf("server sent %s after the request body's answer", answerKind(extra))
		return err.Error(), err
	case !errors.Is(err, io.EOF):
		return stageKind("await end of stream", err), err
	}
	return "", nil
}

// stageKind names a transport failure by stage and gRPC code only, so that
// errors group into a handful of kinds.
func stageKind(stage string, err error) string {
	if errors.Is(err, io.EOF) {
		return stage + ": stream ended by the server"
	}
	return stage + ": " + status.Code(err).String()
}
