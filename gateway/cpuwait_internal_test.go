package gateway

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The wait is summed over threads and never goes back when one exits:
// what each thread waited since it was last read is added.
func TestCPUWaitSumsThreadsAcrossExits(t *testing.T) {
	dir := t.TempDir()
	thread := func(tid, stat string) { writeFile(t, filepath.Join(dir, tid, "schedstat"), stat) }
	c := newCPUWaitCollector()
	thread("10", "5000000000 1000000000 40\n")
	thread("11", "1000000000 500000000 7\n")
	if got, ok := c.readWait(dir); !ok || got != 1.5 {
		t.Fatalf("first read %v %v, want 1.5 s", got, ok)
	}
	// Thread 11 exits; 10 waits 0.25 s more; 12 starts having waited 0.1 s.
	os.RemoveAll(filepath.Join(dir, "11"))
	thread("10", "6000000000 1250000000 50\n")
	thread("12", "1000000 100000000 2\n")
	if got, _ := c.readWait(dir); got != 1.85 {
		t.Fatalf("after a thread exited: %v s, want 1.85", got)
	}
	// Thread 10 exits and a new thread is given its id: all its wait is new.
	thread("10", "2000000 50000000 3\n")
	if got, _ := c.readWait(dir); got != 1.9 {
		t.Fatalf("after an id was reused: %v s, want 1.9", got)
	}
	thread("12", "not a schedstat")
	if _, ok := c.readWait(dir); ok {
		t.Fatal("a malformed schedstat was read")
	}
	if _, ok := c.readWait(filepath.Join(dir, "none")); ok {
		t.Fatal("a missing task directory was read")
	}
}

// This process's own threads, as the collector reads them on Linux.
func TestCPUWaitOfThisProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("schedstat is Linux's")
	}
	c := newCPUWaitCollector()
	if _, ok := c.readWait("/proc/self/task"); !ok {
		t.Fatal("no schedstat read for this process")
	}
}

func TestThrottledSeconds(t *testing.T) {
	v2 := "usage_usec 41078438057\nuser_usec 28613112593\nnr_periods 120\nnr_throttled 9\nthrottled_usec 2500000\n"
	if got, ok := throttledSeconds([]byte(v2), false); !ok || got != 2.5 {
		t.Errorf("v2: %v %v, want 2.5 s", got, ok)
	}
	v1 := "nr_periods 120\nnr_throttled 9\nthrottled_time 1500000000\n"
	if got, ok := throttledSeconds([]byte(v1), true); !ok || got != 1.5 {
		t.Errorf("v1: %v %v, want 1.5 s", got, ok)
	}
	if _, ok := throttledSeconds([]byte("usage_usec 5\n"), false); ok {
		t.Error("a cpu.stat without throttling read as throttled")
	}
	if _, ok := throttledSeconds([]byte("throttled_usec x\n"), false); ok {
		t.Error("a malformed value read")
	}
}

func TestCgroupCPUStat(t *testing.T) {
	root := t.TempDir()
	withThrottle := "usage_usec 1\nthrottled_usec 0\n"
	writeFile(t, filepath.Join(root, "svc.slice/tether.service/cpu.stat"), withThrottle)
	writeFile(t, filepath.Join(root, "nocpu/cpu.stat"), "usage_usec 1\n") // cpu controller not enabled
	writeFile(t, filepath.Join(root, "cpu,cpuacct/docker/abc/cpu.stat"), "nr_throttled 0\nthrottled_time 0\n")
	cases := []struct {
		name, cgroup, want string
		v1                 bool
	}{
		{"v2", "0::/svc.slice/tether.service\n", "svc.slice/tether.service/cpu.stat", false},
		{"v2 without the cpu controller, v1 beside it", "3:cpu,cpuacct:/docker/abc\n0::/nocpu\n", "cpu,cpuacct/docker/abc/cpu.stat", true},
		{"v1", "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n", "cpu,cpuacct/docker/abc/cpu.stat", true},
		{"v2 only, no cpu controller", "0::/nocpu\n", "", false},
		{"nothing", "", "", false},
	}
	for _, c := range cases {
		got, v1 := cgroupCPUStat(root, []byte(c.cgroup))
		want := ""
		if c.want != "" {
			want = filepath.Join(root, c.want)
		}
		if got != want || v1 != c.v1 {
			t.Errorf("%s: %q v1=%v, want %q v1=%v", c.name, got, v1, want, c.v1)
		}
	}
	// A container sees its own cgroup at the mount's root, while
	// /proc/self/cgroup names the host's path.
	ct := t.TempDir()
	writeFile(t, filepath.Join(ct, "cpu.stat"), withThrottle)
	if got, _ := cgroupCPUStat(ct, []byte("0::/kubepods/pod1/abc\n")); got != filepath.Join(ct, "cpu.stat") {
		t.Errorf("container: %q, want the mount's root", got)
	}
}
