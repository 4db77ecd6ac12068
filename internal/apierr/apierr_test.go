package apierr

import (
	"fmt"
	"net/http"
	"testing"
)

func TestKindsMapToStatusesAndBack(t *testing.T) {
	for k := Invalid; k <= Moved; k++ {
		if got := KindOf(k.Status()); got != k {
			t.Errorf("kind %d: status %d maps back to %d", k, k.Status(), got)
		}
	}
	if KindOf(http.StatusTeapot) != Internal || Kind(99).Status() != http.StatusInternalServerError {
		t.Error("unknown statuses and kinds are not internal errors")
	}
	wrapped := fmt.Errorf("context: %w", New(TooMany, "too_many_pending", "bound"))
	if Status(wrapped) != http.StatusTooManyRequests || !ClientError(wrapped) {
		t.Errorf("a wrapped refusal: %d", Status(wrapped))
	}
	if Status(fmt.Errorf("disk")) != http.StatusInternalServerError || ClientError(fmt.Errorf("disk")) {
		t.Error("a plain error is a client error")
	}
	if e := (&Error{Kind: Invalid, Field: "ek_pub", Msg: "bad"}); e.Error() != "field ek_pub: bad" {
		t.Errorf("message %q", e.Error())
	}
}
