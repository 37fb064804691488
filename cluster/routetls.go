package cluster

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"
)

// Routes between embedded nodes carry the whole log: ciphertext with its
// routing metadata, member records, invites, skills. They are TLS 1.3,
// mutually authenticated, with no certificate for the operator to manage:
// every node derives the same certificate authority key from the secret
// every node already shares (the broker key's RouteSecret), and signs a
// fresh certificate of its own with it at each start. A node accepts a
// route only from a peer whose certificate that authority signed, so only
// holders of broker.key can form a route, as with the route password; and
// a passive observer of the route network sees nothing but TLS.
//
// Both ends name the peer routeServerName rather than its address:
// addresses differ per deployment (IPs, private DNS, NAT), and what
// identifies a node of this cluster is the authority, not its address.

// routeServerName is the name every node's route certificate carries and
// every solicited route verifies. ".invalid" can never be a real host.
const routeServerName = "route.claudemesh.invalid"

// validFrom and validUntil bound every route certificate: fixed, so that
// nodes whose clocks disagree by hours or days still accept each other (the
// authority's key, not a date, is what is checked), and far enough out
// that no running cluster meets the end.
var (
	validFrom  = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	validUntil = time.Date(2124, 1, 1, 0, 0, 0, 0, time.UTC)
)

// routeTLSConfig is the TLS configuration of the embedded server's routes,
// for both ends of a route.
func routeTLSConfig(secret []byte, cluster, node string) (*tls.Config, error) {
	caKey := ed25519.NewKeyFromSeed(derive(secret, "claudemesh/cluster-route-ca/v1"))
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "claudemesh cluster " + cluster + " route authority"},
		NotBefore:             validFrom,
		NotAfter:              validUntil,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("cluster: route authority: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("cluster: route authority: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "claudemesh cluster " + cluster + " node " + node},
		DNSNames:     []string{routeServerName},
		NotBefore:    validFrom,
		NotAfter:     validUntil,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, ca, pub, caKey)
	if err != nil {
		return nil, fmt.Errorf("cluster: route certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: priv}},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ServerName:   routeServerName,
	}, nil
}
