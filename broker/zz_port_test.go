package broker

import (
	"net"
	"testing"
	"time"
)

func TestZZRetryOnTakenRoutePort(t *testing.T) {
	cfgs := clusterConfigs(t, "zz", 3, nil)
	ln, err := net.Listen("tcp", cfgs[1].Cluster.Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	bs, err := startConfigs(t, cfgs)
	t.Logf("took %s, err %v, n %d", time.Since(start), err, len(bs))
}
