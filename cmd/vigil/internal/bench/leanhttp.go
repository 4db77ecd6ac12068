package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// leanClient is one simulated host's HTTPS connection to the verifier, for
// the lean load generator: HTTP/1.1 over one keep-alive TLS connection, as
// the agent's net/http client uses it, without the per-request work of
// net/http's client (a Request and a Response, header maps, a goroutine
// pair and two bufio buffers per connection). A request is written in one
// TLS record from a buffer the caller reuses; the response is read into a
// buffer this client reuses. It speaks only what an agent's exchange with
// the verifier needs: a POST with a Content-Length, and a response with a
// Content-Length or chunked body. Not safe for concurrent use: a host
// sends one request at a time.
type leanClient struct {
	cfg *tls.Config
	// addr is the verifier's host:port; hostHeader its Host header line.
	addr       string
	hostHeader string
	conn       *tls.Conn
	stop       func() bool
	rbuf       []byte
}

// newLeanClient returns a client of the verifier at baseURL (https://HOST:PORT).
func newLeanClient(baseURL string, cfg *tls.Config) (*leanClient, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("verifier URL %q: want https://HOST:PORT", baseURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	c := cfg.Clone()
	if c.ServerName == "" {
		c.ServerName = u.Hostname()
	}
	return &leanClient{cfg: c, addr: addr, hostHeader: "Host: " + u.Host + "\r\n"}, nil
}

// requestTimeout bounds one exchange, as the agents' http.Client timeout.
const requestTimeout = 30 * time.Second

// maxResponse bounds a response: verdicts and refusals are small.
const maxResponse = 1 << 20

// dial opens the connection: TCP, then the TLS handshake. Ending ctx
// closes it, whatever it is waiting for.
func (c *leanClient) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1}
	raw, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	tc := tls.Client(newRawConn(raw), c.cfg)
	hctx, cancel := context.WithTimeout(ctx, requestTimeout)
	err = tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		raw.Close()
		return err
	}
	c.conn = tc
	c.stop = context.AfterFunc(ctx, func() { tc.SetDeadline(time.Unix(1, 0)) })
	return nil
}

// close drops the connection; the next request opens a new one.
func (c *leanClient) close() {
	if c.conn == nil {
		return
	}
	c.stop()
	c.conn.Close()
	c.conn = nil
}

// appendRequest appends a POST request line and headers for a body of n
// bytes; the caller appends extra header lines (each ending in CRLF) in
// between with appendHeader, then ends the headers with endHeaders.
func (c *leanClient) appendRequest(dst []byte, path string) []byte {
	dst = append(dst, "POST "...)
	dst = append(dst, path...)
	dst = append(dst, " HTTP/1.1\r\n"...)
	dst = append(dst, c.hostHeader...)
	return append(dst, "User-Agent: vigil-bench\r\nContent-Type: application/cbor\r\n"...)
}

// endHeaders appends the Content-Length of a body of n bytes and the end
// of the headers.
func endHeaders(dst []byte, n int) []byte {
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, "\r\n\r\n"...)
}

// leanResponse is a response read by roundTrip; body shares the client's
// buffer until the next request.
type leanResponse struct {
	status     int
	retryAfter time.Duration
	body       []byte
}

// roundTrip writes req (request line, headers and body) and reads the
// response. A failed exchange closes the connection.
func (c *leanClient) roundTrip(ctx context.Context, req []byte) (leanResponse, error) {
	if c.conn == nil {
		if err := c.dial(ctx); err != nil {
			return leanResponse{}, err
		}
	}
	c.conn.SetDeadline(time.Now().Add(requestTimeout))
	// The context's end sets a past deadline (dial), which the line above
	// would undo had the context ended before it: check after it.
	if err := ctx.Err(); err != nil {
		return leanResponse{}, err
	}
	if _, err := c.conn.Write(req); err != nil {
		c.close()
		return leanResponse{}, c.ctxErr(ctx, err)
	}
	rsp, keep, err := c.readResponse()
	if err != nil {
		c.close()
		return leanResponse{}, c.ctxErr(ctx, err)
	}
	if !keep {
		// The body stays readable: the buffer is this client's.
		c.close()
	}
	return rsp, nil
}

// ctxErr prefers ctx's error to the one its ending caused.
func (c *leanClient) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

var errMalformedResponse = errors.New("malformed HTTP response")

// readResponse reads one response. keep is false when the server closes
// the connection after it.
func (c *leanClient) readResponse() (rsp leanResponse, keep bool, err error) {
	if cap(c.rbuf) == 0 {
		c.rbuf = make([]byte, 0, 2048)
	}
	buf := c.rbuf[:0]
	read := func() error {
		if len(buf) == cap(buf) {
			if len(buf) >= maxResponse {
				return fmt.Errorf("HTTP response over %d bytes", maxResponse)
			}
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		n, err := c.conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if n > 0 {
			return nil
		}
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	defer func() { c.rbuf = buf[:0] }()
	end := -1
	for end < 0 {
		if err := read(); err != nil {
			return rsp, false, err
		}
		end = bytes.Index(buf, []byte("\r\n\r\n"))
	}
	head := buf[:end+2]
	line, head, _ := bytes.Cut(head, []byte("\r\n"))
	// HTTP/1.1 200 OK
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return rsp, false, errMalformedResponse
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return rsp, false, errMalformedResponse
	}
	rsp.status = status
	keep = line[7] == '1'
	length, chunked := -1, false
	for len(head) > 0 {
		var h []byte
		h, head, _ = bytes.Cut(head, []byte("\r\n"))
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return rsp, false, errMalformedResponse
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.Atoi(string(value))
			if err != nil || n < 0 || n > maxResponse {
				return rsp, false, errMalformedResponse
			}
			length = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
			if !chunked {
				return rsp, false, errMalformedResponse
			}
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(value, []byte("close")) {
				keep = false
			}
		case bytes.EqualFold(name, []byte("Retry-After")):
			if secs, err := strconv.Atoi(string(value)); err == nil && secs > 0 {
				rsp.retryAfter = time.Duration(secs) * time.Second
			}
		}
	}
	start := end + 4
	switch {
	case chunked:
		// Chunks are decoded in place: the body ends up at buf[start:w].
		w, r := start, start
		for {
			var i int
			for i = bytes.Index(buf[r:], []byte("\r\n")); i < 0; i = bytes.Index(buf[r:], []byte("\r\n")) {
				if err := read(); err != nil {
					return rsp, false, err
				}
			}
			sizeField, _, _ := bytes.Cut(buf[r:r+i], []byte(";"))
			size, err := strconv.ParseUint(string(bytes.TrimSpace(sizeField)), 16, 31)
			if err != nil || w-start+int(size) > maxResponse {
				return rsp, false, errMalformedResponse
			}
			r += i + 2
			if size == 0 {
				// No trailers are expected: the final CRLF.
				for len(buf) < r+2 {
					if err := read(); err != nil {
						return rsp, false, err
					}
				}
				if !bytes.Equal(buf[r:r+2], []byte("\r\n")) {
					return rsp, false, errMalformedResponse
				}
				r += 2
				break
			}
			for len(buf) < r+int(size)+2 {
				if err := read(); err != nil {
					return rsp, false, err
				}
			}
			w += copy(buf[w:], buf[r:r+int(size)])
			r += int(size) + 2
		}
		if r != len(buf) {
			return rsp, false, errMalformedResponse
		}
		rsp.body = buf[start:w]
	case length >= 0:
		for len(buf) < start+length {
			if err := read(); err != nil {
				return rsp, false, err
			}
		}
		if len(buf) != start+length {
			// Nothing was pipelined: bytes past the body are a broken
			// stream.
			return rsp, false, errMalformedResponse
		}
		rsp.body = buf[start:]
	default:
		// A body delimited by the connection's end.
		for {
			err := read()
			if errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			if err != nil {
				return rsp, false, err
			}
		}
		rsp.body, keep = buf[start:], false
	}
	return rsp, keep, nil
}
