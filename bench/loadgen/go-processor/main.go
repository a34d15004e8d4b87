// A counting fleetspeak.grpcservice.Processor for the ingest benchmark, in Go: the cheapest
// stand-in for GRR we can run here, so that on a 2-core machine the load's own CPU takes as little
// as possible from the server being measured (the node:http2 one in ../processor.ts costs ~40 µs
// of CPU per call; gRPC-Go a fraction of that). It answers every Process call with an empty
// message and counts them; any other method is UNIMPLEMENTED.
//
// Protocol with the benchmark (stdin/stdout, one line each): it prints "listening <host:port>"
// once it serves; for every "count" line read it prints "count <n>"; it exits when stdin closes.
// Built by ../processor.ts with GOPATH mode against Debian's Go libraries (the ones
// ../../../../shared/fleetspeak-go/build.sh installs); no generated code is needed.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

const processMethod = "/fleetspeak.grpcservice.Processor/Process"

func main() {
	var calls atomic.Int64
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-processor: listen:", err)
		os.Exit(1)
	}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		if method != processMethod {
			return status.Errorf(codes.Unimplemented, "go-processor serves only %s, not %s", processMethod, method)
		}
		// The Message is read as an Empty: its fields stay unknown and are dropped.
		if err := stream.RecvMsg(&emptypb.Empty{}); err != nil {
			return err
		}
		calls.Add(1)
		return stream.SendMsg(&emptypb.Empty{})
	}))
	go func() {
		if err := srv.Serve(lis); err != nil {
			fmt.Fprintln(os.Stderr, "go-processor: serve:", err)
			os.Exit(1)
		}
	}()
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "listening %s\n", lis.Addr().String())
	out.Flush()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if strings.TrimSpace(in.Text()) == "count" {
			fmt.Fprintf(out, "count %d\n", calls.Load())
			out.Flush()
		}
	}
	srv.Stop()
}
