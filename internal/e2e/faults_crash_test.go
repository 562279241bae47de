package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// crashRecovery is how soon traffic must flow again once tiergate is back.
const crashRecovery = 5 * time.Second

// sessionEndWithin bounds how long a WebSocket client waits to learn its
// session ended with tiergate: Envoy closes the client's connection after
// its delayed_close_timeout (1 s by default, which the shipped bootstrap
// keeps), plus a second's slack.
const sessionEndWithin = 2 * time.Second

// crashOutcome is one request sent around the crash.
type crashOutcome struct {
	id           string
	start, end   time.Time
	status       int
	err          error
	upstreamBody []byte
}

// TestFaultCrash SIGKILLs tiergate under load. Envoy fails closed: every
// request that starts while tiergate is down gets a 5xx and nothing
// reaches the provider unpoliced; open WebSocket sessions end at once
// rather than hang; and tiergate started again on the same addresses
// takes traffic within 5 s, Envoy untouched.
func TestFaultCrash(t *testing.T) {
	t.Parallel()
	s := startFaultStack(t, testPolicy, faultOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// Sessions open across the crash, each mid-way: one turn done.
	var sessions []*websocket.Conn
	for _, path := range []string{"/v1/responses", "/v1/responses", "/v1/realtime?model=gpt-realtime"} {
		c, _, err := wsDialURL(ctx, s.stack, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if strings.HasPrefix(path, "/v1/realtime") {
			readEvent(t, ctx, c) // session.created
		} else if ev := wsTurn(t, ctx, c, `{"type":"response.create","model":"gpt-5.4","input":"hi"}`); ev != "response.completed" {
			t.Fatalf("a turn before the crash ended with %s", ev)
		}
		sessions = append(sessions, c)
	}
	sessionEnded := make(chan time.Time, len(sessions))
	for _, c := range sessions {
		go func() {
			for {
				if _, _, err := c.Read(ctx); err != nil {
					sessionEnded <- time.Now()
					return
				}
			}
		}()
	}

	// Load: priority requests the policy filters, one after another on
	// four workers over both protocols.
	var mu sync.Mutex
	var outcomes []*crashOutcome
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := s.h1
			if w%2 == 1 {
				client = s.h2
			}
			for loadCtx.Err() == nil {
				o := &crashOutcome{id: newID(t), start: time.Now()}
				req, _ := http.NewRequestWithContext(loadCtx, http.MethodPost, s.url+withID("/v1/responses", o.id, ""),
					strings.NewReader(`{"model":"gpt-5.4","service_tier":"priority","input":"hi"}`))
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					o.status = resp.StatusCode
				}
				o.err, o.end = err, time.Now()
				if loadCtx.Err() != nil {
					return
				}
				mu.Lock()
				outcomes = append(outcomes, o)
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}

	time.Sleep(time.Second)
	killed := time.Now()
	s.signal(t, syscall.SIGKILL)
	<-s.tg.exited
	time.Sleep(2 * time.Second) // tiergate down: Envoy alone
	restarted := time.Now()
	s.tg = s.startTiergate(t)
	ready := time.Now()
	time.Sleep(crashRecovery + time.Second)
	stopLoad()
	wg.Wait()
	t.Logf("killed at 0, restarted at +%v, ready at +%v", restarted.Sub(killed).Round(time.Millisecond), ready.Sub(killed).Round(time.Millisecond))

	// What reached the provider, per request.
	s.fake.mu.Lock()
	for _, o := range outcomes {
		if got := s.fake.seen[o.id]; len(got) > 0 {
			o.upstreamBody = got[0].body
		}
	}
	s.fake.mu.Unlock()

	var before, down, after, recovered int
	var recoveredAt time.Time
	for _, o := range outcomes {
		if o.upstreamBody != nil && (bytes.Contains(o.upstreamBody, []byte("priority")) || !bytes.Equal(o.upstreamBody, []byte(`{"model":"gpt-5.4","input":"hi"}`))) {
			t.Errorf("request %s reached the provider unpoliced: %s", o.id, o.upstreamBody)
		}
		switch {
		case o.end.Before(killed):
			before++
			if o.status != http.StatusOK {
				t.Errorf("before the crash request %s got %d (%v)", o.id, o.status, o.err)
			}
		case o.start.After(killed) && o.end.Before(restarted):
			// Started while tiergate was down (or starting): Envoy must
			// refuse it, and nothing may reach the provider.
			down++
			if o.err != nil || o.status < 500 {
				t.Errorf("while tiergate was down request %s got status %d, error %v; want a 5xx", o.id, o.status, o.err)
			}
			if o.upstreamBody != nil {
				t.Errorf("while tiergate was down request %s reached the provider: %s", o.id, o.upstreamBody)
			}
		case o.start.After(ready):
			after++
			if o.status == http.StatusOK && recoveredAt.IsZero() {
				recoveredAt = o.start
			}
			if !recoveredAt.IsZero() {
				if o.status != http.StatusOK {
					t.Errorf("after recovery request %s got %d (%v)", o.id, o.status, o.err)
				}
				recovered++
			}
		default: // in flight at the kill, or across the restart: either outcome, but policed
			if o.err == nil && o.status != http.StatusOK && o.status < 500 {
				t.Errorf("request %s across the crash got %d", o.id, o.status)
			}
		}
	}
	t.Logf("requests: %d before the crash, %d while down (all 5xx), %d after the restart (%d once recovered)", before, down, after, recovered)
	if down == 0 || before == 0 || recovered == 0 {
		t.Errorf("the load did not cover the crash: %d before, %d while down, %d recovered", before, down, recovered)
	}
	switch {
	case recoveredAt.IsZero():
		t.Errorf("no request succeeded within %v of tiergate being back", crashRecovery)
	case recoveredAt.Sub(ready) > crashRecovery:
		t.Errorf("traffic recovered %v after tiergate was back, want within %v", recoveredAt.Sub(ready), crashRecovery)
	default:
		t.Logf("traffic recovered %v after tiergate was ready", recoveredAt.Sub(ready).Round(time.Millisecond))
	}

	for range sessions {
		select {
		case at := <-sessionEnded:
			if d := at.Sub(killed); d > sessionEndWithin {
				t.Errorf("a WebSocket session ended %v after the crash, want within %v", d, sessionEndWithin)
			} else {
				t.Logf("a WebSocket session ended %v after the crash", d.Round(time.Millisecond))
			}
		default:
			t.Error("a WebSocket session open at the crash has not ended: it hangs")
		}
	}
	t.Run("a new session works once tiergate is back", func(t *testing.T) {
		c, _, err := wsDialURL(ctx, s.stack, "/v1/responses", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if ev := wsTurn(t, ctx, c, `{"type":"response.create","model":"gpt-5.4","service_tier":"priority","input":"hi"}`); ev != "response.completed" {
			t.Errorf("the turn ended with %s", ev)
		}
	})
}
