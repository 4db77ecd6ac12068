package main

import (
	"slices"
	"testing"
)

func TestHoistFlags(t *testing.T) {
	app := newApp()
	for _, tc := range []struct{ in, want []string }{
		{
			[]string{"vigil", "tenant", "--tls-dir", "d", "registrar", "show", "ID", "--json"},
			[]string{"vigil", "tenant", "--tls-dir", "d", "registrar", "show", "--json", "ID"},
		},
		{
			[]string{"vigil", "ca", "init", "DIR", "--san", "h.example", "--json"},
			[]string{"vigil", "ca", "init", "--san", "h.example", "--json", "DIR"},
		},
		{
			[]string{"vigil", "ca", "init", "--san=x", "DIR"},
			[]string{"vigil", "ca", "init", "--san=x", "DIR"},
		},
		{
			[]string{"vigil", "ca", "init", "DIR", "--", "--json"},
			[]string{"vigil", "ca", "init", "DIR", "--", "--json"},
		},
		{[]string{"vigil"}, []string{"vigil"}},
	} {
		if got := hoistFlags(app, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("hoistFlags(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}
