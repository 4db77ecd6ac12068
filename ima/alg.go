package ima

import (
	"crypto"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
)

// Algorithm is a hash algorithm as IMA names it in d-ng fields, PCR banks and
// policies. The zero value is "unknown".
type Algorithm uint8

// The algorithms IMA logs name. SM3 is recognised (entries parse, policies
// match its digests) but Vigil cannot compute it: no well-kept Go
// implementation is available to this module, see ErrUnsupportedHash.
const (
	AlgUnknown Algorithm = iota
	SHA1
	SHA256
	SHA384
	SHA512
	SM3
	MD5 // only seen in ancient 'ima' template entries; never computed
)

// ErrUnsupportedHash reports an algorithm Vigil recognises but cannot
// compute (sm3-256, md5).
var ErrUnsupportedHash = errors.New("hash algorithm recognised but not computable by vigil")

var algNames = [...]string{
	AlgUnknown: "unknown",
	SHA1:       "sha1",
	SHA256:     "sha256",
	SHA384:     "sha384",
	SHA512:     "sha512",
	SM3:        "sm3_256",
	MD5:        "md5",
}

var algSizes = [...]int{SHA1: 20, SHA256: 32, SHA384: 48, SHA512: 64, SM3: 32, MD5: 16, AlgUnknown: 0}

// String returns Keylime's spelling of the algorithm ("sha256", "sm3_256").
func (a Algorithm) String() string {
	if int(a) < len(algNames) {
		return algNames[a]
	}
	return fmt.Sprintf("Algorithm(%d)", uint8(a))
}

// Size is the digest length in bytes (0 for unknown).
func (a Algorithm) Size() int {
	if int(a) < len(algSizes) {
		return algSizes[a]
	}
	return 0
}

// Computable reports whether Vigil can compute digests with a.
func (a Algorithm) Computable() bool {
	return a == SHA1 || a == SHA256 || a == SHA384 || a == SHA512
}

// CryptoHash maps a to the crypto package's identifier (0 when none).
func (a Algorithm) CryptoHash() crypto.Hash {
	switch a {
	case SHA1:
		return crypto.SHA1
	case SHA256:
		return crypto.SHA256
	case SHA384:
		return crypto.SHA384
	case SHA512:
		return crypto.SHA512
	case MD5:
		return crypto.MD5
	}
	return 0
}

// ParseAlgorithm accepts the spellings found in kernels, Keylime and TPM tools:
// "sha1", "sha256", "sm3", "sm3-256", "sm3_256", ... It returns AlgUnknown and
// false for anything else.
func ParseAlgorithm(name string) (Algorithm, bool) {
	a := algorithmFromBytes([]byte(name))
	return a, a != AlgUnknown
}

// algorithmFromBytes is ParseAlgorithm without the allocation, for the parser.
func algorithmFromBytes(b []byte) Algorithm {
	switch string(b) {
	case "sha1", "SHA1", "sha-1":
		return SHA1
	case "sha256", "SHA256", "sha-256":
		return SHA256
	case "sha384", "SHA384", "sha-384":
		return SHA384
	case "sha512", "SHA512", "sha-512":
		return SHA512
	case "sm3", "sm3-256", "sm3_256", "SM3_256":
		return SM3
	case "md5":
		return MD5
	}
	return AlgUnknown
}

// algorithmForSize guesses the algorithm of a bare digest from its length, as
// Keylime does for the legacy 'ima' template and unlabelled policy entries.
// 32 bytes is read as sha256 (sm3 has the same length).
func algorithmForSize(n int) Algorithm {
	switch n {
	case 20:
		return SHA1
	case 32:
		return SHA256
	case 48:
		return SHA384
	case 64:
		return SHA512
	case 16:
		return MD5
	}
	return AlgUnknown
}

// linuxHashAlgo maps the kernel's enum hash_algo (include/uapi/linux/hash_info.h),
// used in IMA signature headers, to Algorithm.
func linuxHashAlgo(id byte) Algorithm {
	switch id {
	case 1:
		return MD5
	case 2:
		return SHA1
	case 4:
		return SHA256
	case 5:
		return SHA384
	case 6:
		return SHA512
	case 17: // HASH_ALGO_SM3_256
		return SM3
	}
	return AlgUnknown
}

// maxDigest is the largest digest any supported algorithm produces.
const maxDigest = 64

// sum hashes data with a into dst (which must hold a.Size() bytes) without
// allocating. It returns ErrUnsupportedHash for algorithms Vigil cannot
// compute.
func sum(a Algorithm, dst []byte, data []byte) error {
	switch a {
	case SHA1:
		s := sha1.Sum(data)
		copy(dst, s[:])
	case SHA256:
		s := sha256.Sum256(data)
		copy(dst, s[:])
	case SHA384:
		s := sha512.Sum384(data)
		copy(dst, s[:])
	case SHA512:
		s := sha512.Sum512(data)
		copy(dst, s[:])
	default:
		return fmt.Errorf("%s: %w", a, ErrUnsupportedHash)
	}
	return nil
}

// Sum returns the digest of data with a.
func Sum(a Algorithm, data []byte) ([]byte, error) {
	if !a.Computable() {
		return nil, fmt.Errorf("%s: %w", a, ErrUnsupportedHash)
	}
	out := make([]byte, a.Size())
	return out, sum(a, out, data)
}
