#!/usr/bin/env python3
"""Seeds for fuzz_authz: random istio.security.Authorization messages (protoc --encode with
proto/authorization.proto), framed as fuzz_authz reads them: a count byte, then each message as a
big-endian 2-byte length and its bytes, then a generation byte. Usage: authz_seeds.py PROTO_DIR OUT_DIR"""
import subprocess, random, struct, sys
rng = random.Random(7)
def addr4(a,b,c,d,l): return 'address: "\\%03o\\%03o\\%03o\\%03o" length: %d' % (a,b,c,d,l)
def rand_match():
    parts=[]
    if rng.random()<0.4: parts.append('source_ips { %s }' % addr4(10,rng.choice([0,1]),rng.choice([0,1]),0,rng.choice([8,16,24,32])))
    if rng.random()<0.2: parts.append('not_source_ips { %s }' % addr4(10,0,0,rng.choice([0,1,254]),rng.choice([24,31,32])))
    if rng.random()<0.3: parts.append('destination_ports: %d' % rng.choice([80,443,1,65535,8080]))
    if rng.random()<0.2: parts.append('not_destination_ports: %d' % rng.choice([80,443]))
    if rng.random()<0.3: parts.append('principals { %s }' % rng.choice(['exact: "cluster.local/ns/ns1/sa/sa1"','suffix: "/sa/sa1"','prefix: "other.td/"','presence {}']))
    if rng.random()<0.2: parts.append('not_principals { presence {} }')
    if rng.random()<0.2: parts.append('namespaces { exact: "%s" }' % rng.choice(['ns1','ns2']))
    if rng.random()<0.2: parts.append('service_accounts { namespace: "ns1" serviceAccount: "sa1" }')
    if rng.random()<0.1: parts.append('destination_ips { %s }' % addr4(10,0,0,rng.choice([100,101]),rng.choice([31,32])))
    return 'matches { %s }' % ' '.join(parts)
def rand_policy(i):
    rules=[]
    for r in range(rng.choice([0,1,1,2])):
        clauses=[]
        for c in range(rng.choice([0,1,2])):
            clauses.append('clauses { %s }' % ' '.join(rand_match() for _ in range(rng.choice([0,1,2]))))
        rules.append('rules { %s }' % ' '.join(clauses))
    return 'name: "p%d" namespace: "ns" action: %s dry_run: %s %s' % (i, rng.choice(['ALLOW','DENY']), rng.choice(['false','false','true']), ' '.join(rules))
def encode(text):
    return subprocess.run(['protoc','--encode=istio.security.Authorization','-I'+sys.argv[1],'authorization.proto'],input=text.encode(),capture_output=True,check=True).stdout
for k in range(24):
    n = rng.choice([1,2,3,4])
    out = bytes([n-1])
    for i in range(n):
        b = encode(rand_policy(i))
        out += struct.pack('>H', len(b)) + b
    out += bytes([k % 3])
    open(sys.argv[2] + '/seed-%02d' % k, 'wb').write(out)
