package pgtest

import (
	"net"
	"path/filepath"
	"strconv"
	"testing"
)

func psql(t *testing.T, s *Server, url, sql string) string {
	t.Helper()
	out, err := s.command(filepath.Join(s.bin, "psql"), url, "-tAc", sql).CombinedOutput()
	if err != nil {
		t.Fatalf("psql %q: %v\n%s", sql, err, out)
	}
	return string(out)
}

func TestServerStartsRestartsAndKeepsData(t *testing.T) {
	s := Start(t)
	url := s.NewDatabase(t)
	psql(t, s, url, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
	s.Restart(t)
	if got := psql(t, s, url, "SELECT v FROM kept"); got != "42\n" {
		t.Fatalf("after a restart: %q", got)
	}
	other := s.NewDatabase(t)
	if other == url {
		t.Fatal("two tests' databases share a name")
	}
	s.Stop()
	if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(s.port)); err == nil {
		c.Close()
		t.Fatal("the server still listens after Stop")
	}
}
