package main

import (
	"math"
	"testing"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// Ratios pair rounds: a case is compared with the reference measured in
// the same round, never across rounds.
func TestRatiosPairRounds(t *testing.T) {
	samples := []authzSample{
		{Case: "noop", Concurrency: 16, Round: 1, RPS: 1000},
		{Case: "noop", Concurrency: 16, Round: 2, RPS: 2000},
		{Case: "x", Concurrency: 16, Round: 1, RPS: 500},
		{Case: "x", Concurrency: 16, Round: 2, RPS: 1600},
		{Case: "x", Concurrency: 64, Round: 1, RPS: 9999},
	}
	got := stats3(ratios(samples, "x", "noop", 16, rps))
	want := [3]float64{0.65, 0.5, 0.8}
	for i := range got {
		if math.Abs(got[i]-want[i]) > 1e-9 {
			t.Fatalf("ratios = %v, want %v", got, want)
		}
	}
	if r := ratios(samples, "x", "noop", 64, rps); len(r) != 0 {
		t.Errorf("a round without a reference gave ratios %v", r)
	}
}
