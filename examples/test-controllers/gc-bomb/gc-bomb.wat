;; A test-only controller, written by hand because no language we build controllers in
;; emits wasm GC instructions: every message allocates 4096 GC arrays of 256 KiB each
;; and keeps them alive in a table (1 GiB of GC heap), which must trap at the instance's
;; `memory-bytes` cap rather than grow the server. It implements the `controller`
;; world's four exports and imports nothing.
;;
;; The test harness turns it into a component binary with the `wat` crate.
(component
  (core module $m
    (type $bytes (array (mut i8)))
    (table $t 4096 (ref null $bytes))
    (memory (export "memory") 1)
    ;; The next free byte for arguments the host copies in; reset after each call, since
    ;; the arguments are dead by then.
    (global $heap (mut i32) (i32.const 1024))

    ;; A bump allocator; a call's arguments fit the one page by far.
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p
        (i32.and
          (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get 2))))
      (if (i32.gt_u (i32.add (local.get $p) (local.get 3)) (i32.const 65536))
        (then unreachable))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (local.get $p))

    (func (export "on-open") (param i64))

    (func (export "on-message") (param i64 i32 i32 i32)
      (local $n i32)
      (global.set $heap (i32.const 1024))
      (loop $fill
        (table.set $t (local.get $n) (array.new_default $bytes (i32.const 262144)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br_if $fill (i32.lt_u (local.get $n) (i32.const 4096)))))

    (func (export "on-close") (param i64 i32 i32 i32)
      (global.set $heap (i32.const 1024)))

    (func (export "on-error") (param i64 i32 i32)
      (global.set $heap (i32.const 1024))))

  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $mem))
  (alias core export $i "cabi_realloc" (core func $realloc))

  ;; Exported functions may only use exported (named) types.
  (type $message-def (variant (case "text" string) (case "binary" (list u8))))
  (export $message "message" (type $message-def))

  (type $on-open-ty (func (param "conn" u64)))
  (type $on-message-ty (func (param "conn" u64) (param "msg" $message)))
  (type $on-close-ty (func (param "conn" u64) (param "code" u16) (param "reason" string)))
  (type $on-error-ty (func (param "conn" u64) (param "error" string)))

  (func $on-open (type $on-open-ty) (canon lift (core func $i "on-open")))
  (func $on-message (type $on-message-ty)
    (canon lift (core func $i "on-message") (memory $mem) (realloc $realloc)))
  (func $on-close (type $on-close-ty)
    (canon lift (core func $i "on-close") (memory $mem) (realloc $realloc)))
  (func $on-error (type $on-error-ty)
    (canon lift (core func $i "on-error") (memory $mem) (realloc $realloc)))

  (export "on-open" (func $on-open))
  (export "on-message" (func $on-message))
  (export "on-close" (func $on-close))
  (export "on-error" (func $on-error)))
