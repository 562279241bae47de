package main

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/tiergate/tiergate/extproc"
)

// defaultMaxMsg is tiergate serve's --grpc-max-message-bytes default; both
// sides use it, so a 16 MiB body (and its 16 MiB rewrite) fits.
const defaultMaxMsg = extproc.DefaultMaxMessageBytes

// dial opens one client connection (grpc.NewClient: one HTTP/2 connection
// per ClientConn), as Envoy's tiergate_extproc cluster does: plaintext
// HTTP/2, keepalive pings every 30 s with a 5 s timeout (envoy/envoy.yaml),
// message limits raised so that bodies of tens of MiB pass.
func dial(target string, maxMsg int) (*grpc.ClientConn, error) {
	return grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
	)
}
