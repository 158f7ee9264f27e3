"""The OpenAPI document: generated from the routes, so it names exactly the routes there are."""

import re

from twisted.trial import unittest

from haitatsu.api.app import HaitatsuAPI, all_routes
from haitatsu.api.openapi import openapi_path
from tests.api.client import APIClient


class OpenAPITests(unittest.TestCase):
    async def test_document_and_routes_match_both_ways(self):
        client = APIClient()
        answer = await client.get("/api/v1/openapi.json", auth=False)
        self.assertEqual(answer.status, 200)
        document = answer.json
        self.assertEqual(document["openapi"], "3.1.0")
        documented = {
            (method.upper(), path)
            for path, operations in document["paths"].items()
            for method in operations
        }
        registered = {(r.method, openapi_path(r.path)) for r in all_routes()}
        self.assertEqual(documented, registered)
        # The Klein app serves exactly the table's routes too.
        served = {
            (method, openapi_path(rule.rule))
            for rule in HaitatsuAPI.app.url_map.iter_rules()
            for method in rule.methods - {"HEAD", "OPTIONS"}
        }
        self.assertEqual(served, registered)

    async def test_every_reference_resolves_and_auth_is_declared(self):
        document = (await APIClient().get("/api/v1/openapi.json", auth=False)).json
        schemas = document["components"]["schemas"]

        def refs(value):
            if isinstance(value, dict):
                for key, inner in value.items():
                    if key == "$ref":
                        yield inner
                    else:
                        yield from refs(inner)
            elif isinstance(value, list):
                for inner in value:
                    yield from refs(inner)

        for ref in refs(document):
            self.assertTrue(ref.startswith("#/components/schemas/"), ref)
            self.assertIn(ref.rsplit("/", 1)[1], schemas)
        for route in all_routes():
            operation = document["paths"][openapi_path(route.path)][route.method.lower()]
            self.assertEqual(bool(operation["security"]), route.auth, route.path)
            params = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            self.assertEqual(params, set(re.findall(r"{(\w+)}", openapi_path(route.path))))

    def test_the_document_validates_as_openapi_3_1(self):
        import schemathesis

        schema = schemathesis.openapi.from_dict(HaitatsuAPI(None, None, None, None).openapi())
        self.assertGreater(len(list(schema.get_all_operations())), 20)
