package soft

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
)

// ECDSA signing costs a scalar multiplication of the curve's generator by a
// fresh random k, an inversion of k, and the hedged generation of k itself;
// only then, s = k⁻¹·(e + r·d) mod n, does the message come in. A simulated
// fleet that must quote thousands of times a second beside the verifier it
// measures can do the message-independent part ahead of time, as TPMs
// prepare an ECDAA commit: PrepareSignatures makes (r, k⁻¹) pairs for an AK,
// each used for one signature and then dropped, and QuoteTo signs with one
// while any are left. The signatures are ordinary ECDSA signatures by the
// AK (k uniformly random, never reused), verified like any other.

// presigned is one precomputed ECDSA nonce: r = (k·G).x mod n and k⁻¹ mod n.
type presigned struct {
	r, kInv *big.Int
}

// maxPresigned bounds the nonces kept for one AK.
const maxPresigned = 1 << 16

// PrepareSignatures precomputes n ECDSA nonces for ak, which QuoteTo uses
// up one per quote before it signs the usual way again, and returns how
// many are ready. It does nothing for an RSA AK (whose signature has no
// part independent of the message) and returns 0. The work is done outside
// the TPM's lock. Nonces are kept with the loaded AK, so an AK evicted from
// the TPM's object slots loses them.
func (t *TPM) PrepareSignatures(ctx context.Context, ak AKBlob, n int) (int, error) {
	var key *loadedAK
	err := t.do(ctx, func(st *state) (bool, error) {
		var created bool
		var err error
		key, created, err = t.loadAK(st, ak)
		return created, err
	})
	if err != nil {
		return 0, err
	}
	priv, ok := key.key.(*ecdsa.PrivateKey)
	if !ok {
		return 0, nil
	}
	t.mu.Lock()
	n = min(n, maxPresigned-len(key.presigned))
	t.mu.Unlock()
	made, err := presign(priv, max(n, 0))
	if err != nil {
		return 0, fmt.Errorf("soft TPM: prepare signatures: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	key.presigned = append(key.presigned, made...)
	return len(key.presigned), nil
}

// presign makes n nonces for priv's curve (P-256, P-384 or P-521).
func presign(priv *ecdsa.PrivateKey, n int) ([]presigned, error) {
	var curve ecdh.Curve
	switch priv.Curve {
	case elliptic.P256():
		curve = ecdh.P256()
	case elliptic.P384():
		curve = ecdh.P384()
	case elliptic.P521():
		curve = ecdh.P521()
	default:
		return nil, fmt.Errorf("curve %s", priv.Curve.Params().Name)
	}
	order := priv.Curve.Params().N
	size := (order.BitLen() + 7) / 8
	out := make([]presigned, 0, n)
	buf := make([]byte, size)
	k := new(big.Int)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return nil, err
		}
		if order.BitLen()%8 != 0 {
			buf[0] &= byte(1<<(order.BitLen()%8)) - 1
		}
		k.SetBytes(buf)
		if k.Sign() == 0 || k.Cmp(order) >= 0 {
			continue // k must be in [1, n-1]: try again
		}
		// k·G, constant time, through ecdh: the public key of the scalar k.
		sk, err := curve.NewPrivateKey(buf)
		if err != nil {
			continue
		}
		pub := sk.PublicKey().Bytes() // 0x04 ‖ x ‖ y
		r := new(big.Int).SetBytes(pub[1 : 1+(len(pub)-1)/2])
		r.Mod(r, order)
		if r.Sign() == 0 {
			continue
		}
		out = append(out, presigned{r: r, kInv: new(big.Int).ModInverse(k, order)})
	}
	return out, nil
}

// signPresigned signs digest with a precomputed nonce: s = k⁻¹·(e + r·d)
// mod n, with e the digest's leftmost bits as long as n (FIPS 186-5). It
// returns r and s as big-endian bytes without leading zeros.
func signPresigned(priv *ecdsa.PrivateKey, p presigned, digest []byte) (r, s []byte, err error) {
	order := priv.Curve.Params().N
	e := new(big.Int).SetBytes(digest)
	if excess := len(digest)*8 - order.BitLen(); excess > 0 {
		e.Rsh(e, uint(excess))
	}
	sv := new(big.Int).Mul(p.r, priv.D)
	sv.Add(sv, e)
	sv.Mul(sv, p.kInv)
	sv.Mod(sv, order)
	if sv.Sign() == 0 {
		return nil, nil, errors.New("ECDSA: s is zero")
	}
	return p.r.Bytes(), sv.Bytes(), nil
}
