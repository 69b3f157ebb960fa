package signing

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// AllowedSigner is one line of an allowed-signers file (ssh-keygen(1), ALLOWED
// SIGNERS; git's gpg.ssh.allowedSignersFile): the principals a key may sign as, the
// namespaces it may sign in and when.
type AllowedSigner struct {
	// Principals are comma-separated patterns (*, ?, and ! to exclude), as written.
	Principals string
	Key        ssh.PublicKey
	// Namespaces, when set, are the only namespaces (patterns) the key signs in.
	Namespaces string
	// ValidAfter and ValidBefore bound when the key's signatures count (zero: no bound).
	ValidAfter, ValidBefore time.Time
	// Line is the line number in the file, for messages.
	Line int
}

// AllowedSigners is a parsed allowed-signers file.
type AllowedSigners []AllowedSigner

// ParseAllowedSigners reads an allowed-signers file:
//
//	principals [options] keytype base64-key [comment]
//
// with the options namespaces="...", valid-after="..." and valid-before="..."
// (timestamps YYYYMMDD[HHMM[SS]], taken as UTC whether or not they end in Z, so that
// every worker reads them alike). cert-authority lines are refused: certificates are
// not supported. Blank lines and lines starting with # are skipped.
func ParseAllowedSigners(text []byte) (AllowedSigners, error) {
	var out AllowedSigners
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := parseLine(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("allowed signers line %d: %w", n, err))
			continue
		}
		s.Line = n
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("allowed signers: %w", err))
	}
	return out, errors.Join(errs...)
}

func parseLine(line string) (AllowedSigner, error) {
	var s AllowedSigner
	principals, rest, err := firstField(line)
	if err != nil {
		return s, err
	}
	if principals == "" {
		return s, errors.New("no principals")
	}
	s.Principals = principals
	key, _, options, _, err := ssh.ParseAuthorizedKey([]byte(rest))
	if err != nil {
		return s, fmt.Errorf("principals %q: the rest is not [options] keytype base64-key: %w", principals, err)
	}
	if _, ok := key.(*ssh.Certificate); ok {
		return s, errors.New("certificates are not supported: list the plain public key")
	}
	s.Key = key
	for _, o := range options {
		name, value, hasValue := strings.Cut(o, "=")
		value = strings.Trim(value, `"`)
		switch strings.ToLower(name) {
		case "cert-authority":
			return s, errors.New("cert-authority is not supported: list each signer's own key")
		case "namespaces":
			if !hasValue || value == "" {
				return s, errors.New(`namespaces needs a value, e.g. namespaces="mlrelease"`)
			}
			s.Namespaces = value
		case "valid-after", "valid-before":
			t, err := parseTimestamp(value)
			if err != nil {
				return s, fmt.Errorf("%s=%q: %w", name, value, err)
			}
			if strings.EqualFold(name, "valid-after") {
				s.ValidAfter = t
			} else {
				s.ValidBefore = t
			}
		default:
			return s, fmt.Errorf("unknown option %q", o)
		}
	}
	return s, nil
}

// firstField splits off the first whitespace-separated field, which may be quoted.
func firstField(line string) (field, rest string, err error) {
	if strings.HasPrefix(line, `"`) {
		end := strings.Index(line[1:], `"`)
		if end < 0 {
			return "", "", errors.New("unterminated quote in the principals")
		}
		return line[1 : end+1], strings.TrimSpace(line[end+2:]), nil
	}
	i := strings.IndexAny(line, " \t")
	if i < 0 {
		return "", "", errors.New("no key after the principals")
	}
	return line[:i], strings.TrimSpace(line[i+1:]), nil
}

func parseTimestamp(v string) (time.Time, error) {
	v = strings.TrimSuffix(strings.TrimSuffix(v, "Z"), "z")
	layouts := map[int]string{8: "20060102", 12: "200601021504", 14: "20060102150405"}
	layout, ok := layouts[len(v)]
	if !ok {
		return time.Time{}, errors.New("want YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS")
	}
	return time.ParseInLocation(layout, v, time.UTC)
}

// Check reports which line trusts key to sign as principal in namespace at time at,
// or why none does.
func (a AllowedSigners) Check(principal string, key ssh.PublicKey, namespace string, at time.Time) (AllowedSigner, error) {
	want := key.Marshal()
	var keyKnown bool
	var reasons []string
	for _, s := range a {
		if !bytes.Equal(s.Key.Marshal(), want) {
			continue
		}
		keyKnown = true
		switch {
		case !MatchPatterns(principal, s.Principals):
			reasons = append(reasons, fmt.Sprintf("line %d is for %q", s.Line, s.Principals))
		case s.Namespaces != "" && !MatchPatterns(namespace, s.Namespaces):
			reasons = append(reasons, fmt.Sprintf("line %d allows namespaces %q, not %q", s.Line, s.Namespaces, namespace))
		case !s.ValidAfter.IsZero() && at.Before(s.ValidAfter):
			reasons = append(reasons, fmt.Sprintf("line %d is valid only after %s", s.Line, s.ValidAfter.Format(time.RFC3339)))
		case !s.ValidBefore.IsZero() && !at.Before(s.ValidBefore):
			reasons = append(reasons, fmt.Sprintf("line %d was valid only before %s", s.Line, s.ValidBefore.Format(time.RFC3339)))
		default:
			return s, nil
		}
	}
	if !keyKnown {
		return AllowedSigner{}, fmt.Errorf("key %s is not in the release's allowed signers", Fingerprint(key))
	}
	return AllowedSigner{}, fmt.Errorf("key %s may not sign as %q: %s", Fingerprint(key), principal, strings.Join(reasons, "; "))
}

// MatchPatterns matches s against a comma-separated pattern list as OpenSSH does
// (match_pattern_list): * and ? are wildcards, a pattern starting with ! excludes,
// and an excluding match wins.
func MatchPatterns(s, list string) bool {
	matched := false
	for _, p := range strings.Split(list, ",") {
		p = strings.TrimSpace(p)
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		if p == "" {
			continue
		}
		if wildcard(p, s) {
			if neg {
				return false
			}
			matched = true
		}
	}
	return matched
}

// wildcard matches s against p, where * is any run of characters and ? any one.
func wildcard(p, s string) bool {
	px, sx := 0, 0
	star, mark := -1, 0
	for sx < len(s) {
		switch {
		case px < len(p) && (p[px] == '?' || p[px] == s[sx]):
			px++
			sx++
		case px < len(p) && p[px] == '*':
			star, mark = px, sx
			px++
		case star >= 0:
			px = star + 1
			mark++
			sx = mark
		default:
			return false
		}
	}
	for px < len(p) && p[px] == '*' {
		px++
	}
	return px == len(p)
}
