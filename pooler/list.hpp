// Intrusive doubly-linked lists: a connection's state is the list it is on, and
// moving between states is one unlink + one link, with O(1) counts for SHOW POOLS.
#pragma once

#include <cstddef>

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

  // Iterate safely even when the callback unlinks the current node.
  template <class T, class F>
  void for_each(F&& f) {
    for (ListNode* n = head.next; n != &head;) {
      ListNode* next = n->next;
      f(static_cast<T*>(n->owner));
      n = next;
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
