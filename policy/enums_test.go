package policy

import (
	"strings"
	"testing"

	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// TestEnumNamesAgree holds the three spellings of each enum together: the
// proto enum (config.proto), the names a policy file may write
// (tierValues, actionValues, endpointValues) and the runtime enum whose
// String() reaches metric labels and usage records. A value added to one
// and not the others fails here rather than loading as "none" or "unknown".
func TestEnumNamesAgree(t *testing.T) {
	t.Parallel()
	check := func(t *testing.T, protoNames map[int32]string, prefix string, fileNames map[string]int32, runtimeName func(int32) string, noRuntime ...string) {
		t.Helper()
		seen := map[int32]bool{}
		for n, full := range protoNames {
			if n == 0 {
				continue // UNSPECIFIED is never written
			}
			file := strings.ToLower(strings.TrimPrefix(full, prefix))
			got, ok := fileNames[file]
			if !ok || got != n {
				t.Errorf("%s: a policy file's %q reads as %d, %v; want %d", full, file, got, ok, n)
			}
			seen[n] = true
			want := file
			for _, x := range noRuntime {
				if x == file {
					want = ""
				}
			}
			if got := runtimeName(n); want != "" && got != want {
				t.Errorf("%s converts to the runtime value %q; want %q", full, got, want)
			}
		}
		for file, n := range fileNames {
			if !seen[n] {
				t.Errorf("a policy file's %q reads as %d, which config.proto does not define", file, n)
			}
		}
	}
	t.Run("service tier", func(t *testing.T) {
		file := numbers(tierValues)
		if file["fast"] != file["priority"] {
			t.Errorf("fast reads as %d; want priority's %d", file["fast"], file["priority"])
		}
		delete(file, "fast") // the one alias, checked above
		check(t, tiergatev1.ServiceTier_name, "SERVICE_TIER_", file, func(n int32) string {
			return tierFromProto(tiergatev1.ServiceTier(n)).String()
		}, "all")
		if got, want := int(TierUltrafast-TierPriority)+1, len(tiergatev1.ServiceTier_name)-2; got != want {
			t.Errorf("%d concrete runtime tiers; config.proto names %d besides unspecified and all", got, want)
		}
		for n := TierPriority; n <= TierUltrafast; n++ {
			if got := ParseTier(n.String()); got != n {
				t.Errorf("ParseTier(%q) = %v", n.String(), got)
			}
		}
	})
	t.Run("action", func(t *testing.T) {
		check(t, tiergatev1.Action_name, "ACTION_", numbers(actionValues), func(n int32) string {
			return actionFromProto(tiergatev1.Action(n)).String()
		})
	})
	t.Run("endpoint", func(t *testing.T) {
		check(t, tiergatev1.Endpoint_name, "ENDPOINT_", numbers(endpointValues), func(n int32) string {
			return endpointFromProto(tiergatev1.Endpoint(n)).String()
		})
		// message_batches is the one runtime endpoint a policy file cannot
		// name: its entries are judged as messages.
		if got := len(endpointNames) - 2; got != len(endpointValues) {
			t.Errorf("%d runtime endpoints besides unknown and message_batches; the policy file names %d", got, len(endpointValues))
		}
		if _, ok := endpointValues[EndpointMessageBatches.String()]; ok {
			t.Error("a policy file may name message_batches, whose entries are judged as messages")
		}
	})
}

// numbers maps each name to its proto enum's number.
func numbers[V ~int32](m map[string]V) map[string]int32 {
	out := make(map[string]int32, len(m))
	for k, v := range m {
		out[k] = int32(v)
	}
	return out
}
