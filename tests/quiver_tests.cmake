# Included by each directory that registers tests (DESIGN section 9: tests
# never use the user's default cache).
#
# qv_guard_tests() runs last in such a directory: every test it registered
# that does not name QUIVER_CACHE itself gets a default cache of its own under
# the build tree (guard.home.snapshot empties them before a run, so no run
# sees the last one's results), and requires the home guard, which fails the
# run when anything under the user's real default cache changed.
set(QV_DEFAULT_CACHES ${PROJECT_BINARY_DIR}/test-tmp/default-caches)

function(qv_guard_tests)
  get_property(tests DIRECTORY PROPERTY TESTS)
  foreach(t IN LISTS tests)
    if(t MATCHES "^guard\\.home\\.")
      continue()
    endif()
    get_test_property(${t} ENVIRONMENT env)
    get_test_property(${t} ENVIRONMENT_MODIFICATION mod)
    if(NOT "${env};${mod}" MATCHES "(^|;)QUIVER_CACHE=")
      set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT "QUIVER_CACHE=${QV_DEFAULT_CACHES}/${t}")
    endif()
    set_property(TEST ${t} APPEND PROPERTY FIXTURES_REQUIRED quiver_home_guard)
  endforeach()
endfunction()
