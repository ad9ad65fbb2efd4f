-- wrk: POST BENCH_BODY (JSON) to the URL's path; the token comes with -H.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
