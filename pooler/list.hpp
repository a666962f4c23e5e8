// Intrusive doubly-linked lists: a connection's state is the list it is on, and
// moving between states is one unlink + one link, with O(1) counts for SHOW POOLS.
#pragma once

#include <cstddef>
#include <vector>

namespace pgpivot {

struct ListHead;

struct ListNode {
  ListNode* prev = nullptr;
  ListNode* next = nullptr;
  ListHead* list = nullptr;  // which list this node is on, or nullptr
  void* owner = nullptr;     // the object embedding this node
};

struct ListHead {
  ListNode head;
  std::size_t count = 0;

  ListHead() { head.prev = head.next = &head; }
  ListHead(const ListHead&) = delete;
  ListHead& operator=(const ListHead&) = delete;

  [[nodiscard]] bool empty() const { return count == 0; }
  [[nodiscard]] std::size_t size() const { return count; }

  void push_back(ListNode* n) { insert_before(&head, n); }
  void push_front(ListNode* n) { insert_before(head.next, n); }

  template <class T>
  [[nodiscard]] T* front() const { return empty() ? nullptr : static_cast<T*>(head.next->owner); }
  template <class T>
  [[nodiscard]] T* back() const { return empty() ? nullptr : static_cast<T*>(head.prev->owner); }

  static void unlink(ListNode* n) {
    if (!n->list) return;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->list->count--;
    n->prev = n->next = nullptr;
    n->list = nullptr;
  }

  // Calls f for each element. The callback may unlink any element (itself or
  // others) or link new ones: it iterates over a snapshot and skips elements
  // that have left this list in the meantime. Not for hot paths (it allocates).
  template <class T, class F>
  void for_each(F&& f) {
    std::vector<ListNode*> snapshot;
    snapshot.reserve(count);
    for (ListNode* n = head.next; n != &head; n = n->next) snapshot.push_back(n);
    for (ListNode* n : snapshot) {
      if (n->list == this) f(static_cast<T*>(n->owner));
    }
  }

 private:
  void insert_before(ListNode* pos, ListNode* n) {
    unlink(n);
    n->prev = pos->prev;
    n->next = pos;
    pos->prev->next = n;
    pos->prev = n;
    n->list = this;
    count++;
  }
};

}  // namespace pgpivot
