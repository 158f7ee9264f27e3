"""The shared conventions (API.md 0 and 0.2) as pure functions."""

import base64
import io

from twisted.trial import unittest

from haitatsu.api import conventions as c
from haitatsu.storage.records import rfc3339


class LimitTests(unittest.SynchronousTestCase):
    def test_limit_defaults_clamps_and_falls_back(self):
        cases = {
            "": 50,
            "10": 10,
            "+7": 7,
            "100": 100,
            "101": 100,
            "0": 50,
            "-3": 50,
            "abc": 50,
            "1.5": 50,
            " 5": 50,
            "5_0": 50,
            "99999999999999999999": 50,
        }
        for text, expected in cases.items():
            self.assertEqual(c.parse_limit(text), expected, text)


class CursorTests(unittest.SynchronousTestCase):
    def test_cursor_is_base64url_without_padding_of_time_and_id(self):
        ns = 1_746_094_830_123_456_789
        cursor = c.encode_cursor(ns, "01JABCDEFGHJKMNPQRSTVWXYZ0")
        self.assertNotIn("=", cursor)
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        self.assertEqual(text, "2025-05-01T10:20:30.123456789Z|01JABCDEFGHJKMNPQRSTVWXYZ0")
        self.assertEqual(c.decode_cursor(cursor), (ns, "01JABCDEFGHJKMNPQRSTVWXYZ0"))

    def test_cursor_round_trips_whole_seconds(self):
        ns = 1_746_094_830_000_000_000
        self.assertEqual(c.decode_cursor(c.encode_cursor(ns, "X")), (ns, "X"))

    def test_invalid_cursors(self):
        def enc(text):
            return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

        bad = [
            "!!!",
            "abc=",
            "a",
            enc("no-separator"),
            enc("yesterday|ID"),
            enc("2025-05-01|ID"),
            enc("2025-02-30T00:00:00Z|ID"),
            enc("2025-05-01T10:20:30Z|"),
            base64.urlsafe_b64encode(b"\xff\xfe|x").rstrip(b"=").decode(),
        ]
        for cursor in bad:
            with self.assertRaises(c.APIError, msg=cursor) as caught:
                c.decode_cursor(cursor)
            self.assertEqual(
                (caught.exception.status, caught.exception.code), (400, "invalid_cursor")
            )

    def test_rfc3339_offsets_are_converted_to_utc(self):
        self.assertEqual(
            c.parse_rfc3339("2025-05-01T12:20:30.5+02:00"),
            c.parse_rfc3339("2025-05-01T10:20:30.5Z"),
        )
        self.assertEqual(
            rfc3339(c.parse_rfc3339("2025-05-01T10:20:30.5Z")), "2025-05-01T10:20:30.5Z"
        )


class Row:
    def __init__(self, created_at, id):
        self.created_at = created_at
        self.id = id


class PageTests(unittest.SynchronousTestCase):
    def test_next_encodes_the_last_row_returned_only_when_an_extra_row_exists(self):
        rows = [Row(30, "C"), Row(20, "B"), Row(10, "A")]
        shown, next_cursor = c.page_rows(rows, c.Page(limit=2))
        self.assertEqual([r.id for r in shown], ["C", "B"])
        self.assertEqual(c.decode_cursor(next_cursor), (20, "B"))
        shown, next_cursor = c.page_rows(rows, c.Page(limit=3))
        self.assertEqual((len(shown), next_cursor), (3, ""))

    def test_in_memory_pages_follow_the_same_order_and_cursor(self):
        rows = [Row(10, "A"), Row(20, "B"), Row(20, "C"), Row(30, "D")]
        first = c.paginate_in_memory(rows, c.Page(limit=2))
        self.assertEqual([r.id for r in first], ["D", "C", "B"])
        second = c.paginate_in_memory(rows, c.Page(limit=2, before=(20, "C")))
        self.assertEqual([r.id for r in second], ["B", "A"])


class OmitZeroTests(unittest.SynchronousTestCase):
    def test_zero_values_are_left_out_like_go_omitempty(self):
        fields = {
            "a": 0,
            "b": False,
            "c": "",
            "d": [],
            "e": {},
            "f": None,
            "g": 0.0,
            "keep": 1,
            "t": True,
            "s": "x",
            "l": [0],
        }
        self.assertEqual(c.omit_zero(fields), {"keep": 1, "t": True, "s": "x", "l": [0]})

    def test_explicit_fields_are_kept(self):
        self.assertEqual(c.omit_zero({"name": "", "x": None}, keep=["name"]), {"name": ""})


class JSONEncodingTests(unittest.SynchronousTestCase):
    def test_compact_utf8_with_only_the_escapes_json_requires(self):
        value = {
            "text": 'Grüße \u2028 <b>&</b> \x00\x1f "q" \\ 会議',
            "numbers": [0, -1, 2**63 - 1, 5.5, 1.0, 0.1],
            "nested": {"list": [True, False, None], "empty": {}, "tuple": (1, "x")},
        }
        expected = (
            '{"text":"Grüße \u2028 <b>&</b> \\u0000\\u001f \\"q\\" \\\\ 会議",'
            '"numbers":[0,-1,9223372036854775807,5.5,1.0,0.1],'
            '"nested":{"list":[true,false,null],"empty":{},"tuple":[1,"x"]}}'
        ).encode("utf-8")
        self.assertEqual(c.dumps(value), expected)

    def test_keys_that_are_not_strings_are_written_as_strings(self):
        self.assertEqual(c.dumps({1: "a", "b": 2}), b'{"1":"a","b":2}')

    def test_small_floats_use_gos_exponent(self):
        # Go writes 1e-7 where Python's json module writes 1e-07.
        self.assertEqual(c.dumps([1e-07, 2.5e-10]), b"[1e-7,2.5e-10]")


class TimestampTests(unittest.SynchronousTestCase):
    def test_fractions_are_trimmed_and_seconds_are_cached_correctly(self):
        base = c.parse_rfc3339("2026-11-22T04:52:40Z")
        self.assertEqual(rfc3339(base), "2026-11-22T04:52:40Z")
        self.assertEqual(rfc3339(base + 640_480_000), "2026-11-22T04:52:40.64048Z")
        self.assertEqual(rfc3339(base + 1), "2026-11-22T04:52:40.000000001Z")
        self.assertEqual(rfc3339(base + 1_000_000_000), "2026-11-22T04:52:41Z")
        self.assertEqual(rfc3339(-1), "1969-12-31T23:59:59.999999999Z")
        self.assertIsNone(rfc3339(None))


class TokenTests(unittest.SynchronousTestCase):
    def test_token_matching(self):
        self.assertTrue(c.token_matches(b"Bearer s3cret", "s3cret"))
        self.assertFalse(c.token_matches(b"bearer s3cret", "s3cret"))
        self.assertFalse(c.token_matches(b"Bearer s3cret ", "s3cret"))
        self.assertFalse(c.token_matches(None, "s3cret"))
        self.assertFalse(c.token_matches(b"Bearer ", ""))
        self.assertFalse(c.token_matches(b"Basic s3cret", "s3cret"))


class FakeRequest:
    def __init__(self, body: bytes, length=None):
        self.content = io.BytesIO(body)
        self._length = length

    def getHeader(self, name):
        return self._length


class BodyTests(unittest.SynchronousTestCase):
    def assertCode(self, request, status, code):
        with self.assertRaises(c.APIError) as caught:
            c.read_object(request)
        self.assertEqual((caught.exception.status, caught.exception.code), (status, code))

    def test_malformed_json_is_invalid_request(self):
        for body in [b"", b"{", b"[]", b'"x"', b"NaN", b'{"a": NaN}', b"\xff{}"]:
            self.assertCode(FakeRequest(body), 400, "invalid_request")

    def test_objects_parse(self):
        self.assertEqual(c.read_object(FakeRequest(b'{"a": 1}')), {"a": 1})

    def test_body_over_64_mib_is_413(self):
        with self.assertRaises(c.APIError) as caught:
            c.check_body_size(FakeRequest(b"{}", length=str(c.BODY_LIMIT + 1).encode()))
        self.assertEqual(caught.exception.status, 413)
        c.check_body_size(FakeRequest(b"{}", length=str(c.BODY_LIMIT).encode()))
