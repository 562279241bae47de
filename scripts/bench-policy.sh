#!/usr/bin/env bash
# Measures the policy's decision plus rewrite against one validating pass of
# gjson over the same body, in the same run, and prints the median ratio of
# each (-count=10 by default; COUNT=N to change).
set -euo pipefail
cd "$(dirname "$0")/.."
count=${COUNT:-10}
printf "%-44s %12s %8s %7s\n" "benchmark" "median ns/op" "allocs" "ratio"
go test -run '^$' -bench 'ValidBytes|Apply' -benchmem -count "$count" ./policy/ | tee /tmp/tiergate-bench-policy.txt |
awk '
/^Benchmark/ {
  name=$1; sub(/-[0-9]+$/, "", name); ns[name]=ns[name] " " $3
  for (i=4;i<=NF;i++) if ($(i)=="allocs/op") allocs[name]=$(i-1)
}
function median(list,   a, n, i, j, t) {
  n=split(list, a, " ")
  for (i=1;i<=n;i++) for (j=i+1;j<=n;j++) if (a[j]+0 < a[i]+0) { t=a[i]; a[i]=a[j]; a[j]=t }
  return (n%2) ? a[(n+1)/2] : (a[n/2]+a[n/2+1])/2
}
END {
  for (name in ns) {
    if (name !~ /Apply/) continue
    size=name; sub(/.*\//, "", size)
    base=median(ns["BenchmarkValidBytes/" size])
    printf "%-44s %12.0f %8s %7.2f\n", name, median(ns[name]), allocs[name], median(ns[name])/base
  }
  for (name in ns) if (name ~ /ValidBytes/) printf "%-44s %12.0f %8s %7s\n", name, median(ns[name]), "-", "1.00"
}' | sort
