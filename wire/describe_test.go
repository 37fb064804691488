package wire

import "testing"

// TestDescribeDecodeError: a body that does not decode is said in the
// body's terms, never in the decoder's Go words.
func TestDescribeDecodeError(t *testing.T) {
	type body struct {
		Name  string   `json:"name"`
		IDs   []string `json:"ids"`
		Count int      `json:"count"`
		Inner struct {
			On bool `json:"on"`
		} `json:"inner"`
	}
	for in, want := range map[string]string{
		`{"name":5}`:              `the body: "name" must be a string, not a number`,
		`{"ids":[1]}`:             `the body: "ids[0]" must be a string, not a number`,
		`{"count":"3"}`:           `the body: "count" must be a whole number, not a string`,
		`{"inner":{"on":"yes"}}`:  `the body: "inner.on" must be true or false, not a string`,
		`{"name":"a",}`:           `the body is not valid JSON (invalid character ',' at start of value at byte 11)`,
		`{"name":"a","name":"b"}`: `the body is not valid JSON (duplicate object member name "name")`,
		`[1]`:                     `the body must be a JSON object`,
		`{"name":"a"} and more`:   `the body is not valid JSON (invalid character 'a' after top-level value at byte 13)`,
	} {
		var b body
		if got := DescribeDecodeError(Decode([]byte(in), &b), "the body"); got != want {
			t.Errorf("%s: %q, want %q", in, got, want)
		}
	}
}
