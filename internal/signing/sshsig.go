// Package signing signs and verifies release decisions with SSH keys: SSHSIG
// signatures in the format of `ssh-keygen -Y sign` (and of git's SSH commit signing),
// checked against keys in git's allowed-signers format. Verification is a pure
// computation, so that ReleaseWorkflow's validators can do it.
package signing

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Namespace is the SSHSIG namespace of mlrelease's signatures: a signature made for
// another purpose (a git commit, a file) never passes for a decision.
const Namespace = "mlrelease"

const (
	magic        = "SSHSIG"
	sigVersion   = 1
	armorType    = "SSH SIGNATURE"
	hashSHA512   = "sha512"
	hashSHA256   = "sha256"
	maxSigLength = 16 << 10
)

// sigBlob is the wire form of an SSHSIG signature after the magic preamble.
type sigBlob struct {
	Version       uint32
	PublicKey     []byte
	Namespace     string
	Reserved      string
	HashAlgorithm string
	Signature     []byte
}

// signedData is what the key signs: the magic preamble followed by these fields.
type signedData struct {
	Namespace     string
	Reserved      string
	HashAlgorithm string
	Hash          []byte
}

func toSign(namespace, hashAlg string, message []byte) ([]byte, error) {
	var h []byte
	switch hashAlg {
	case hashSHA512:
		s := sha512.Sum512(message)
		h = s[:]
	case hashSHA256:
		s := sha256.Sum256(message)
		h = s[:]
	default:
		return nil, fmt.Errorf("hash algorithm %q is not sha512 or sha256", hashAlg)
	}
	return append([]byte(magic), ssh.Marshal(signedData{Namespace: namespace, HashAlgorithm: hashAlg, Hash: h})...), nil
}

// Sign signs message for namespace with s and returns the armored signature, as
// `ssh-keygen -Y sign -n namespace` writes it. RSA keys sign with rsa-sha2-512.
func Sign(s ssh.Signer, namespace string, message []byte) (string, error) {
	if namespace == "" {
		return "", errors.New("sign: the namespace is empty")
	}
	data, err := toSign(namespace, hashSHA512, message)
	if err != nil {
		return "", err
	}
	var sig *ssh.Signature
	if s.PublicKey().Type() == ssh.KeyAlgoRSA {
		as, ok := s.(ssh.AlgorithmSigner)
		if !ok {
			return "", errors.New("sign: this RSA key cannot sign with rsa-sha2-512")
		}
		sig, err = as.SignWithAlgorithm(rand.Reader, data, ssh.KeyAlgoRSASHA512)
	} else {
		sig, err = s.Sign(rand.Reader, data)
	}
	if err != nil {
		return "", fmt.Errorf("sign with %s key %s: %w", s.PublicKey().Type(), Fingerprint(s.PublicKey()), err)
	}
	blob := append([]byte(magic), ssh.Marshal(sigBlob{
		Version: sigVersion, PublicKey: s.PublicKey().Marshal(), Namespace: namespace,
		HashAlgorithm: hashSHA512, Signature: ssh.Marshal(sig),
	})...)
	return armor(blob), nil
}

// armor wraps blob as ssh-keygen does: 70 base64 characters a line.
func armor(blob []byte) string {
	enc := base64.StdEncoding.EncodeToString(blob)
	var b strings.Builder
	b.WriteString("-----BEGIN " + armorType + "-----\n")
	for len(enc) > 70 {
		b.WriteString(enc[:70] + "\n")
		enc = enc[70:]
	}
	b.WriteString(enc + "\n-----END " + armorType + "-----\n")
	return b.String()
}

// Verify checks that armored is a valid SSHSIG signature of message in namespace and
// returns the key that made it. Whether the release trusts that key is the
// allowed signers' question (AllowedSigners.Check).
func Verify(armored, namespace string, message []byte) (ssh.PublicKey, error) {
	if len(armored) > maxSigLength {
		return nil, fmt.Errorf("signature is %d bytes, more than %d", len(armored), maxSigLength)
	}
	blk, rest := pem.Decode([]byte(strings.TrimSpace(armored)))
	if blk == nil || blk.Type != armorType {
		return nil, errors.New("signature is not an armored SSH signature (-----BEGIN SSH SIGNATURE-----)")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("signature has text after its END line")
	}
	raw := blk.Bytes
	if !bytes.HasPrefix(raw, []byte(magic)) {
		return nil, errors.New("signature lacks the SSHSIG preamble")
	}
	var sb sigBlob
	if err := ssh.Unmarshal(raw[len(magic):], &sb); err != nil {
		return nil, fmt.Errorf("signature is malformed: %w", err)
	}
	if sb.Version != sigVersion {
		return nil, fmt.Errorf("signature version %d is not %d", sb.Version, sigVersion)
	}
	if sb.Namespace != namespace {
		return nil, fmt.Errorf("signature is for namespace %q, not %q", sb.Namespace, namespace)
	}
	key, err := ssh.ParsePublicKey(sb.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("signature's public key: %w", err)
	}
	if _, ok := key.(*ssh.Certificate); ok {
		return nil, errors.New("signatures by SSH certificates are not supported: sign with the plain key")
	}
	var sig ssh.Signature
	if err := ssh.Unmarshal(sb.Signature, &sig); err != nil {
		return nil, fmt.Errorf("signature is malformed: %w", err)
	}
	if key.Type() == ssh.KeyAlgoRSA && sig.Format == ssh.KeyAlgoRSA {
		return nil, errors.New("RSA signature uses SHA-1 (ssh-rsa): sign with rsa-sha2-256 or rsa-sha2-512")
	}
	data, err := toSign(namespace, sb.HashAlgorithm, message)
	if err != nil {
		return nil, err
	}
	if err := key.Verify(data, &sig); err != nil {
		return nil, fmt.Errorf("signature does not match the message (key %s): %w", Fingerprint(key), err)
	}
	return key, nil
}

// Fingerprint is the key's SHA256 fingerprint as ssh-keygen -l shows it.
func Fingerprint(k ssh.PublicKey) string { return ssh.FingerprintSHA256(k) }

// Nonce is a fresh random nonce for a statement.
func Nonce() (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		return "", fmt.Errorf("nonce: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
