package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestLeanClientWithNetHTTP: the lean client's requests are what net/http's
// server reads (path, headers, body) over one kept connection, and it
// reads net/http's answers: Content-Length or chunked bodies, Retry-After,
// Connection: close.
func TestLeanClientWithNetHTTP(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/cbor" || r.ContentLength != int64(len(body)) {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("Vigil-Seen", r.Header.Get("Vigil-Nonce"))
			w.Write(body)
		case "/chunked":
			for i := range 3 {
				fmt.Fprintf(w, "part %d;", i)
				w.(http.Flusher).Flush()
			}
		case "/busy":
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("busy"))
		case "/close":
			w.Header().Set("Connection", "close")
			w.Write([]byte("bye"))
		default:
			http.NotFound(w, r)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	cfg := srv.Client().Transport.(*http.Transport).TLSClientConfig
	c, err := newLeanClient(srv.URL, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	ctx := context.Background()
	post := func(path, nonce string, body []byte) leanResponse {
		t.Helper()
		req := c.appendRequest(nil, path)
		if nonce != "" {
			req = append(req, "Vigil-Nonce: "+nonce+"\r\n"...)
		}
		req = append(endHeaders(req, len(body)), body...)
		rsp, err := c.roundTrip(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return rsp
	}
	for i := range 5 {
		body := bytes.Repeat([]byte{byte(i)}, 100+i*3000)
		rsp := post("/echo", "abcd", body)
		if rsp.status != 200 || !bytes.Equal(rsp.body, body) {
			t.Fatalf("echo %d: %d, %d bytes back", i, rsp.status, len(rsp.body))
		}
	}
	if rsp := post("/chunked", "", nil); rsp.status != 200 || string(rsp.body) != "part 0;part 1;part 2;" {
		t.Errorf("chunked: %d %q", rsp.status, rsp.body)
	}
	if rsp := post("/busy", "", []byte("x")); rsp.status != 503 || rsp.retryAfter != 3*time.Second || string(rsp.body) != "busy" {
		t.Errorf("busy: %+v", rsp)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for keep-alive requests, want 1", n)
	}
	if rsp := post("/close", "", nil); string(rsp.body) != "bye" || c.conn != nil {
		t.Errorf("close: %q, connection kept: %v", rsp.body, c.conn != nil)
	}
	if rsp := post("/echo", "", []byte("again")); string(rsp.body) != "again" {
		t.Errorf("after a close: %q", rsp.body)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (one more after Connection: close)", n)
	}
	// Ending the context ends a request waiting for its answer.
	ctx2, cancel := context.WithCancel(ctx)
	c2, _ := newLeanClient(srv.URL, cfg)
	defer c2.close()
	if _, err := c2.roundTrip(ctx2, append(endHeaders(c2.appendRequest(nil, "/echo"), 1), 'x')); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := c2.roundTrip(ctx2, append(endHeaders(c2.appendRequest(nil, "/echo"), 1), 'x')); !errors.Is(err, context.Canceled) {
		t.Errorf("after the context ended: %v", err)
	}
}

// TestLeanClientRefusesBrokenResponses: responses the client cannot take
// whole are errors, and the connection is dropped.
func TestLeanClientRefusesBrokenResponses(t *testing.T) {
	for _, tc := range []struct{ name, rsp string }{
		{"not HTTP", "SMTP ready\r\n\r\n"},
		{"bad status", "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"},
		{"header without colon", "HTTP/1.1 200 OK\r\nbroken\r\n\r\n"},
		{"gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"},
		{"bytes after the body", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab"},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"},
		{"no end", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeServer(t, func(conn net.Conn) {
				br := bufio.NewReader(conn)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(conn, tc.rsp)
				conn.(*tls.Conn).CloseWrite()
			})
			defer c.close()
			if rsp, err := c.roundTrip(context.Background(), endHeaders(c.appendRequest(nil, "/"), 0)); err == nil {
				t.Errorf("read %+v", rsp)
			}
			if c.conn != nil {
				t.Error("kept the connection")
			}
		})
	}
	// A body delimited by the end of the connection is read whole.
	c := fakeServer(t, func(conn net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(conn)); err != nil {
			return
		}
		io.WriteString(conn, "HTTP/1.1 200 OK\r\n\r\nuntil the end")
		conn.Close()
	})
	defer c.close()
	if rsp, err := c.roundTrip(context.Background(), endHeaders(c.appendRequest(nil, "/"), 0)); err != nil || string(rsp.body) != "until the end" {
		t.Errorf("%q, %v", rsp.body, err)
	}
}

// fakeServer serves one TLS connection with serve and returns a client of
// it.
func fakeServer(t *testing.T, serve func(net.Conn)) *leanClient {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.StartTLS()
	cert := srv.TLS.Certificates
	cfg := srv.Client().Transport.(*http.Transport).TLSClientConfig
	srv.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: cert})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		serve(conn)
	}()
	c, err := newLeanClient("https://"+ln.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.hostHeader, "Host: 127.0.0.1:") {
		t.Fatalf("host header %q", c.hostHeader)
	}
	return c
}
